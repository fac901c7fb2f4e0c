"""Runs through the control plane: started over HTTP, executed by the rendered destination machine in
the local Step Functions (jobs played by `ScriptedJobs`), reported with summary and dead letters;
and the scheduler fanning out to what the registry holds at run time."""
import dataclasses

import boto3
import pytest

from audience_relay.connectors.state.dynamodb import DynamoStateStore
from audience_relay.connectors.state.store import DeadLetter
from audience_relay.control.api import ControlPlane
from audience_relay.control.auth import Key
from audience_relay.control.registry import DestinationRegistry
from audience_relay.control.runs import RunLocations, Runs
from audience_relay.control.server import ControlPlaneServer
from audience_relay.orchestration.local.runner import LocalStateMachines
from audience_relay.orchestration.local.stack import REGION
from tests.integration.test_control_plane import EXAMPLE, OPERATOR, call
from tests.integration.test_state_machines import GOOGLE, META, RESOURCES, ScriptedJobs

pytestmark = pytest.mark.integration

RUN = {"input": "s3://lake/in/day1/", "consent": "s3://lake/consent/"}
# The scheduler reads the registry, one destination per scan page: the fan-out follows every page.
REGISTERED = dataclasses.replace(RESOURCES, registry_table="registry", registry_page_size=1)


@pytest.fixture(scope="module")
def stage():
    with LocalStateMachines([GOOGLE, META], REGISTERED, retry_scale=0.0) as machines:
        aws = machines.aws
        dynamodb = boto3.resource("dynamodb", endpoint_url=aws.endpoint, region_name=REGION,
                                  aws_access_key_id="testing", aws_secret_access_key="testing")
        store = DynamoStateStore(RESOURCES.state_table, resource=dynamodb)
        runs = Runs(RunLocations(RESOURCES.destination_machine_arn_prefix, RESOURCES.work_bucket, RESOURCES.state_table),
                    sfn=aws.client("stepfunctions"), s3=aws.client("s3"), store=store)
        plane = ControlPlane(DestinationRegistry("registry", aws.client("dynamodb")), runs)
        keys = {OPERATOR.access_key: Key(OPERATOR.secret_key, "operator")}
        with ControlPlaneServer(plane, keys, REGION) as server:
            jobs = ScriptedJobs(aws.client("s3"))
            machines.bind(jobs)
            assert call(server.url, "POST", "/destinations", EXAMPLE["google_dm"])[0] == 201
            yield machines, server.url, store, jobs


def test_a_run_started_over_http_is_reported_with_its_summary_and_dead_letters(stage):
    machines, url, store, _ = stage
    status, started = call(url, "POST", "/destinations/google_dm/runs", {**RUN, "run_id": "api-r1"})
    assert status == 202 and started["run_id"] == "api-r1" and started["execution_arn"].endswith(":audience-relay-destination-google_dm:api-r1")
    machines.aws.wait(started["execution_arn"], timeout=60)
    store.add_dead_letter(DeadLetter("api-r1/google_dm/google_high_value/add/000001/abc", "api-r1", "google_dm", "HTTP 400", 1,
                                     "2026-12-01T00:00:00Z"))
    status, report = call(url, "GET", "/destinations/google_dm/runs/api-r1")
    assert status == 200 and report["status"] == "SUCCEEDED" and len(report["executions"]) == 1
    assert report["summary"]["status"] == "SUCCEEDED"   # what the (scripted) deliver job wrote to the work bucket
    assert [letter["batch_key"] for letter in report["dead_letters"]] == ["api-r1/google_dm/google_high_value/add/000001/abc"]
    assert call(url, "POST", "/destinations/google_dm/runs", {**RUN, "run_id": "api-r1"})[0] == 409   # never twice


def test_a_bad_run_request_is_refused_naming_the_field(stage):
    _, url, _, _ = stage
    assert call(url, "POST", "/destinations/google_dm/runs", {"input": "/local/path/", "consent": RUN["consent"]}) == (
        400, {"error": "input: an s3://bucket/folder/ URI is required"})
    assert call(url, "POST", "/destinations/google_dm/runs", {**RUN, "run_id": "../x"})[0] == 400
    assert call(url, "POST", "/destinations/google_dm/runs", {**RUN, "colour": "blue"}) == (400, {"error": "colour: unknown key"})
    assert call(url, "POST", "/destinations/partner_sftp/runs", RUN)[0] == 404   # not registered
    assert call(url, "GET", "/destinations/google_dm/runs/never-started")[0] == 404


def test_a_paused_destination_starts_no_run(stage):
    machines, url, _, _ = stage
    assert call(url, "POST", "/destinations/google_dm/pause")[0] == 200
    before = len(machines.executions("destination-google_dm"))
    status, refused = call(url, "POST", "/destinations/google_dm/runs", RUN)
    assert status == 409 and "is paused" in refused["error"]
    assert len(machines.executions("destination-google_dm")) == before
    assert call(url, "POST", "/destinations/google_dm/resume")[0] == 200


def test_the_scheduler_fans_out_to_the_registrys_active_destinations_at_run_time(stage):
    machines, url, _, _ = stage
    def fanned_out(run_id: str) -> list[str]:
        execution = machines.run("scheduler", run_id, {**RUN, "run_id": run_id}, timeout=120)
        assert execution.status == "SUCCEEDED", execution.cause
        return sorted(result["destination"] for result in execution.output["destinations"])

    assert fanned_out("s-1") == ["google_dm"]   # registered by the fixture
    assert call(url, "POST", "/destinations", EXAMPLE["meta_ads"])[0] == 201
    assert fanned_out("s-2") == ["google_dm", "meta_ads"]   # no render, no deploy (its machine exists)
    assert call(url, "POST", "/destinations/google_dm/pause")[0] == 200
    assert fanned_out("s-3") == ["meta_ads"]
    assert call(url, "POST", "/destinations/google_dm/resume")[0] == 200


def test_a_destination_registered_after_the_deploy_runs_on_the_registered_destinations_machine(stage):
    """No machine was rendered for it: the scheduler and the run API start the registered
    destinations' machine, which delivers it under the quota key the registry holds."""
    machines, url, _, _ = stage
    newcomer = {**EXAMPLE["meta_ads"], "id": "meta_eu", "daily_quota": {"key": "meta_shared", "requests": 5000}}
    assert call(url, "POST", "/destinations", newcomer)[0] == 201
    execution = machines.run("scheduler", "s-4", {**RUN, "run_id": "s-4"}, timeout=120)
    assert execution.status == "SUCCEEDED", execution.cause
    assert {"destination": "meta_eu", "status": "SUCCEEDED"}.items() <= next(
        result for result in execution.output["destinations"] if result["destination"] == "meta_eu").items()
    [registered] = machines.executions("destination-_registered")
    assert (registered.name, registered.status, registered.output["destination"]) == ("s-4-meta_eu", "SUCCEEDED", "meta_eu")
    lease = machines.lease("meta_shared")   # the registry's quota key, taken and released
    assert lease["fencing_token"] == "1" and "owner" not in lease

    status, started = call(url, "POST", "/destinations/meta_eu/runs", {**RUN, "run_id": "api-r2"})
    assert status == 202 and started["execution_arn"].endswith(":audience-relay-destination-_registered:api-r2-meta_eu")
    machines.aws.wait(started["execution_arn"], timeout=60)
    status, report = call(url, "GET", "/destinations/meta_eu/runs/api-r2")
    assert status == 200 and report["status"] == "SUCCEEDED" and report["summary"]["status"] == "SUCCEEDED"
    assert call(url, "POST", "/destinations/meta_eu/runs", {**RUN, "run_id": "api-r2"})[0] == 409   # never twice

    on_emr = {**newcomer, "id": "meta_emr", "orchestration": {"prepare_engine": "emr"}}
    assert call(url, "POST", "/destinations", on_emr)[0] == 201
    status, refused = call(url, "POST", "/destinations/meta_emr/runs", RUN)
    assert status == 409 and "deploy first" in refused["error"]
    for destination in ("meta_eu", "meta_emr"):
        assert call(url, "POST", f"/destinations/{destination}/pause")[0] == 200


def test_held_removals_are_approved_over_http_and_the_run_is_delivered_again(stage, monkeypatch):
    """The run's guard held google_in_market's removals (REMOVALS_HELD): the execution failed with
    an alert. An approval over HTTP is recorded with who gave it, and the destination's machine
    delivers the run again, from the lease on."""
    import json

    machines, url, _, jobs = stage
    s3 = machines.aws.client("s3")
    held = {"google_in_market": {"removes": 900, "committed_members": 1000, "max_remove_fraction": 0.5, "max_removes": None, "batches": 1}}
    s3.put_object(Bucket=RESOURCES.work_bucket, Key="runs/api-held/manifest.json",
                  Body=json.dumps({"run_id": "api-held", "destinations": {"google_dm": {"removals_held": held}}}).encode())
    jobs.statuses["google_dm"] = ["REMOVALS_HELD", "SUCCEEDED"]
    status, started = call(url, "POST", "/destinations/google_dm/runs", {**RUN, "run_id": "api-held"})
    assert status == 202
    assert machines.aws.wait(started["execution_arn"], timeout=60).error == "RemovalsHeldFailed"
    assert [a["message"]["phase"] for a in machines.alerts()] == ["RemovalsHeld"]

    # The work bucket is in this stage's moto, which pipeline.storage reaches through AWS_ENDPOINT_URL.
    for name, value in {"AWS_ENDPOINT_URL": machines.aws.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    assert call(url, "POST", "/destinations/google_dm/runs/api-held/removals", {"decision": "maybe"})[0] == 400
    assert call(url, "POST", "/destinations/google_dm/runs/api-held/removals", {"decision": "approved", "audiences": ["other"]})[0] == 409
    status, decided = call(url, "POST", "/destinations/google_dm/runs/api-held/removals", {"decision": "approved"})
    assert status == 202 and decided["removals"]["google_in_market"]["decision"] == "approved"
    assert decided["removals"]["google_in_market"]["by"] == "operator"   # the caller's principal
    again = machines.aws.wait(decided["execution_arn"], timeout=60)
    assert again.status == "SUCCEEDED" and "Prepare" not in again.states
    recorded = json.loads(s3.get_object(Bucket=RESOURCES.work_bucket, Key="runs/api-held/delivery/google_dm/removals.json")["Body"].read())
    assert recorded["audiences"]["google_in_market"]["decision"] == "approved"
    status, refused = call(url, "POST", "/destinations/google_dm/runs/api-held/removals", {"decision": "rejected"})
    assert status == 409 and "already approved" in refused["error"]
