"""The control plane over HTTP: the local server, SigV4-signed requests, the registry in DynamoDB (moto server).

Requests are signed with botocore's SigV4Auth for `execute-api`, as an AWS SDK or `awscurl`
signs calls to an IAM-authorized API Gateway.
"""
import copy
import datetime
import json
import urllib.error
import urllib.request
import uuid

import boto3
import pytest
import yaml
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from audience_relay.connectors.state.dynamodb import create_registry_table
from audience_relay.control.api import ControlPlane
from audience_relay.control.auth import Key
from audience_relay.control.registry import DestinationRegistry
from audience_relay.control.server import ControlPlaneServer
from audience_relay.pipeline.config import DEFAULT_CONFIG, load_config

pytestmark = pytest.mark.integration

REGION = "us-east-1"
OPERATOR = Credentials("AKIDOPERATOR", "operator-secret")
EXAMPLE = {d["id"]: d for d in yaml.safe_load(DEFAULT_CONFIG.read_text())["destinations"]}


@pytest.fixture
def published(tmp_path):
    """The jobs' config file the control plane republishes (the example's settings, its destinations replaced)."""
    path = tmp_path / "destinations.yaml"
    path.write_text(DEFAULT_CONFIG.read_text())
    return path


@pytest.fixture
def api(moto_server, published):
    table = f"registry-{uuid.uuid4().hex[:8]}"
    create_registry_table(table, boto3.client("dynamodb"))
    keys = {OPERATOR.access_key: Key(OPERATOR.secret_key, "arn:aws:iam::123456789012:user/operator")}
    with ControlPlaneServer(ControlPlane(DestinationRegistry(table), config_uri=str(published)), keys, REGION) as server:
        yield server.url


def call(url: str, method: str, path: str, body: object = None, credentials: Credentials | None = OPERATOR, headers: dict | None = None,
         region: str = REGION, tamper: bool = False) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else b""
    request = AWSRequest(method=method, url=url + path, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    if credentials:
        SigV4Auth(credentials, "execute-api", region).add_auth(request)
    if tamper:
        data = data.replace(b"10000", b"20000")
    sent = urllib.request.Request(url + path, data=data or None, method=method, headers=dict(request.headers.items()))
    try:
        with urllib.request.urlopen(sent, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_register_list_get_update_pause_and_resume_a_destination(api, published):
    status, created = call(api, "POST", "/destinations", EXAMPLE["meta_ads"])
    assert status == 201 and created["id"] == "meta_ads" and created["version"] == 1 and created["active"]
    assert created["updated_by"] == "arn:aws:iam::123456789012:user/operator"
    assert call(api, "POST", "/destinations", EXAMPLE["google_dm"])[0] == 201
    status, listed = call(api, "GET", "/destinations")
    assert status == 200 and [d["id"] for d in listed] == ["google_dm", "meta_ads"]

    changed = {**EXAMPLE["meta_ads"], "max_batch_size": 5000}
    status, updated = call(api, "PUT", "/destinations/meta_ads", changed, headers={"If-Match": "1"})
    assert status == 200 and updated["version"] == 2 and updated["destination"]["max_batch_size"] == 5000
    status, stale = call(api, "PUT", "/destinations/meta_ads", changed, headers={"If-Match": "1"})
    assert status == 412 and "at version 2, not 1" in stale["error"]

    # the jobs' config follows the registry: what a run started now prepares and delivers
    assert [d.id for d in load_config(published).active_destinations] == ["google_dm", "meta_ads"]
    assert load_config(published).destinations[1].max_batch_size == 5000 and load_config(published).quality.max_null_fraction == 0.01

    status, paused = call(api, "POST", "/destinations/meta_ads/pause")
    assert status == 200 and paused["active"] is False and paused["version"] == 3
    status, edited = call(api, "PUT", "/destinations/meta_ads", changed)   # an edit is not a resume
    assert status == 200 and edited["active"] is False and edited["version"] == 4
    assert call(api, "GET", "/destinations/meta_ads")[1]["destination"]["active"] is False
    assert [d.id for d in load_config(published).active_destinations] == ["google_dm"]
    assert call(api, "POST", "/destinations/meta_ads/resume")[1]["active"] is True


def test_a_bad_destination_is_refused_naming_the_field_and_nothing_is_stored(api):
    too_big = {**EXAMPLE["google_dm"], "max_batch_size": 20000}
    status, refused = call(api, "POST", "/destinations", too_big)
    assert status == 400 and refused["error"] == "max_batch_size: 20000 is above the google_data_manager maximum of 10000"
    status, refused = call(api, "POST", "/destinations", {**EXAMPLE["meta_ads"], "colour": "blue"})
    assert status == 400 and refused["error"] == "colour: unknown key"
    status, refused = call(api, "POST", "/destinations", {**EXAMPLE["meta_ads"], "credentials": {"token": "inline"}})
    assert status == 400 and refused["error"].startswith("credentials.token: unknown key")
    assert call(api, "POST", "/destinations", ["not", "a", "mapping"])[0] == 400
    assert call(api, "GET", "/destinations") == (200, [])


def test_checks_across_destinations_apply_as_in_the_yaml_file(api):
    assert call(api, "POST", "/destinations", EXAMPLE["google_dm"])[0] == 201
    assert call(api, "POST", "/destinations", EXAMPLE["google_dm"]) == (
        409, {"error": "destination 'google_dm' is already registered; update it with PUT"})
    other = copy.deepcopy(EXAMPLE["google_dm"])
    other.update(id="google_dm_eu", daily_quota={"requests": 50000, "key": "google_ads_project"})
    status, refused = call(api, "POST", "/destinations", other)
    assert status == 400 and "daily_quota key 'google_ads_project' is shared by 'google_dm' (100000 requests) and 'google_dm_eu' (50000)" in refused["error"]
    status, refused = call(api, "PUT", "/destinations/google_dm", {**EXAMPLE["google_dm"], "id": "renamed"})
    assert status == 400 and "differs from the destination in the path" in refused["error"]
    assert call(api, "GET", "/destinations/nope")[0] == 404


@pytest.mark.parametrize("how, expected", [
    ({"credentials": None}, "no AWS Signature Version 4 Authorization header"),
    ({"credentials": Credentials("AKIDOPERATOR", "wrong-secret")}, "the signature does not match the request"),
    ({"credentials": Credentials("AKIDUNKNOWN", "operator-secret")}, "is not this API's"),
    ({"region": "eu-west-1"}, "is not this API's"),
    ({"tamper": True}, "the signature does not match the request"),
], ids=["unsigned", "wrong secret", "unknown key", "other region", "body changed after signing"])
def test_a_request_not_signed_by_a_known_key_for_this_api_is_refused(api, how, expected):
    status, refused = call(api, "POST", "/destinations", EXAMPLE["google_dm"], **how)
    assert status == 403 and expected in refused["error"]
    assert call(api, "GET", "/destinations") == (200, [])


def test_an_old_signature_is_refused(api):
    request = AWSRequest(method="GET", url=api + "/destinations")
    signer = SigV4Auth(OPERATOR, "execute-api", REGION)
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=6)
    request.context["timestamp"] = old.strftime("%Y%m%dT%H%M%SZ")
    request.headers["X-Amz-Date"] = request.context["timestamp"]
    request.headers["Host"] = api.removeprefix("http://")
    signature = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    request.headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={signer.scope(request)}, "
                                        f"SignedHeaders={signer.signed_headers(signer.headers_to_sign(request))}, Signature={signature}")
    sent = urllib.request.Request(api + "/destinations", method="GET", headers=dict(request.headers.items()))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(sent, timeout=30)
    assert refused.value.code == 403 and "older or newer than five minutes" in refused.value.read().decode()


def test_unknown_routes_and_methods_are_answered_not_crashed(api):
    assert call(api, "GET", "/nothing-here")[0] == 404
    assert call(api, "DELETE", "/destinations")[0] == 405
    assert call(api, "GET", "/destinations/meta_ads/pause")[0] == 405


def test_the_routes_refuse_a_request_that_no_layer_authenticated():
    from audience_relay.control.api import Request

    assert ControlPlane(registry=None).handle(Request("GET", "/destinations")).status == 403


def test_the_control_plane_imports_without_spark_as_its_lambda_must():
    import subprocess
    import sys

    probe = ("import sys, audience_relay.control.api, audience_relay.control.registry, audience_relay.control.auth; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'pyspark', 'pyarrow', 'pandas', 'great_expectations'}))")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_the_lambda_answers_api_gateways_event_as_the_callers_iam_arn(moto_server, monkeypatch, published):
    import base64

    from audience_relay.lambdas import control as lambda_function

    table = f"registry-{uuid.uuid4().hex[:8]}"
    create_registry_table(table, boto3.client("dynamodb"))
    for name, value in {"REGISTRY_TABLE": table, "DESTINATION_MACHINE_ARN_PREFIX": "arn:aws:states:us-east-1:123456789012:stateMachine:x-",
                        "WORK_BUCKET": "work", "STATE_TABLE": "state", "CONFIG_URI": str(published), "STAGE": "dev"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(lambda_function, "_PLANE", None)
    caller = {"identity": {"userArn": "arn:aws:iam::123456789012:role/operator"}}
    meta = {**EXAMPLE["meta_ads"], "credentials": {"secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:audience-relay/dev/meta_ads-AbCdEf"}}
    event = {"httpMethod": "POST", "path": "/destinations", "headers": {"Content-Type": "application/json"}, "requestContext": caller,
             "body": base64.b64encode(json.dumps(meta).encode()).decode(), "isBase64Encoded": True}
    answer = lambda_function.handler(event, None)
    assert answer["statusCode"] == 201 and json.loads(answer["body"])["updated_by"] == caller["identity"]["userArn"]
    unsigned = {"httpMethod": "GET", "path": "/destinations", "requestContext": {"identity": {}}}
    assert lambda_function.handler(unsigned, None)["statusCode"] == 403   # API Gateway let it through: still refused


PAUSED = ("tiktok_ads", "snap_ads", "linkedin_ads", "x_ads", "pinterest_ads")   # the example config's paused ad platforms


def test_seeding_from_the_deployed_config_registers_and_updates_but_keeps_a_pause(moto_server, published):
    registry = DestinationRegistry(f"registry-{uuid.uuid4().hex[:8]}")
    create_registry_table(registry.table_name, boto3.client("dynamodb"))
    assert registry.seed(str(published), "deploy") == ["meta_ads", "google_dm", "partner_sftp", *PAUSED]
    assert not any(registry.get(destination_id).active for destination_id in PAUSED)   # registered as the config has them: paused
    assert registry.seed(str(published), "deploy") == []   # nothing changed
    registry.set_active("google_dm", False, "operator")
    published.write_text(published.read_text().replace("max_batch_size: 500000", "max_batch_size: 400000"))
    assert registry.seed(str(published), "deploy") == ["partner_sftp"]
    assert not registry.get("google_dm").active and registry.get("partner_sftp").spec["max_batch_size"] == 400000


def test_every_item_carries_its_quota_key_and_a_deploy_fills_in_older_ones(moto_server, published):
    """The scheduler hands each machine the registry's quota key; items from before it was kept get it at the next deploy."""
    client = boto3.client("dynamodb")
    registry = DestinationRegistry(f"registry-{uuid.uuid4().hex[:8]}")
    create_registry_table(registry.table_name, client)
    registry.seed(str(published), "deploy")
    def quota_keys() -> dict:
        return {i["destination_id"]["S"]: i.get("quota_key", {}).get("S") for i in client.scan(TableName=registry.table_name)["Items"]}

    assert quota_keys() == {"meta_ads": "meta_ads", "google_dm": "google_ads_project", "partner_sftp": "partner_sftp",
                            **{destination_id: destination_id for destination_id in PAUSED}}
    client.update_item(TableName=registry.table_name, Key={"destination_id": {"S": "google_dm"}}, UpdateExpression="REMOVE quota_key")
    assert registry.seed(str(published), "deploy") == [] and quota_keys()["google_dm"] == "google_ads_project"


def test_a_failure_behind_the_routes_is_answered_500_and_logged_not_dropped(moto_server, caplog):
    keys = {OPERATOR.access_key: Key(OPERATOR.secret_key, "operator")}
    with ControlPlaneServer(ControlPlane(DestinationRegistry("no-such-table")), keys, REGION) as server:
        assert call(server.url, "GET", "/destinations") == (500, {"error": "internal error; see the server's log"})
    assert any("control.failed" in record.getMessage() and record.exc_info for record in caplog.records)


@pytest.fixture
def staged_api(moto_server, published):
    """The control plane as the `dev` stage's Lambda runs it: it knows its stage."""
    table = f"registry-{uuid.uuid4().hex[:8]}"
    create_registry_table(table, boto3.client("dynamodb"))
    keys = {OPERATOR.access_key: Key(OPERATOR.secret_key, "arn:aws:iam::123456789012:user/operator")}
    with ControlPlaneServer(ControlPlane(DestinationRegistry(table, stage="dev"), config_uri=str(published)), keys, REGION) as server:
        yield server.url


def _google(secret_name: str, base_url: str = "https://datamanager.googleapis.com") -> dict:
    google = copy.deepcopy(EXAMPLE["google_dm"])
    google["credentials"] = {"secret_arn": f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{secret_name}-AbCdEf"}
    google["connection"] = {**google["connection"], "base_url": base_url}
    return google


def test_a_caller_cannot_point_a_destination_at_another_destinations_secret_or_at_its_own_host(staged_api):
    """Registered through the API, a destination's token must be its own secret, and its requests
    must go to its platform's API host: otherwise the next run sends another destination's token,
    and the hashed audiences, wherever the caller says."""
    assert call(staged_api, "POST", "/destinations", _google("audience-relay/dev/google_dm"))[0] == 201
    stolen = {**_google("audience-relay/dev/meta_ads"), "id": "google_dm_copy", "daily_quota": {"requests": 100000, "key": "copy"}}
    status, refused = call(staged_api, "POST", "/destinations", stolen)
    assert status == 400 and "credentials.secret_arn" in refused["error"] and "audience-relay/dev/google_dm_copy" in refused["error"]
    status, refused = call(staged_api, "PUT", "/destinations/google_dm", _google("audience-relay/dev/google_dm", "https://collector.example.net"))
    assert status == 400 and "connection.base_url" in refused["error"] and "datamanager.googleapis.com" in refused["error"]
    # Any secret a destination names is its own: Meta's app secret under its own name, not another's.
    meta = copy.deepcopy(EXAMPLE["meta_ads"])
    meta["credentials"] = {"secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:audience-relay/dev/meta_ads-AbCdEf"}
    meta["connection"]["app_secret"] = {"secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:audience-relay/dev/google_dm-AbCdEf"}
    status, refused = call(staged_api, "POST", "/destinations", meta)
    assert status == 400 and "connection.app_secret.secret_arn" in refused["error"], refused
    meta["connection"]["app_secret"]["secret_arn"] = "arn:aws:secretsmanager:us-east-1:123456789012:secret:audience-relay/dev/meta_ads/app_secret-AbCdEf"
    assert call(staged_api, "POST", "/destinations", meta)[0] == 201
    sftp = copy.deepcopy(EXAMPLE["partner_sftp"])
    status, refused = call(staged_api, "POST", "/destinations", sftp)
    assert status == 400 and "deploy" in refused["error"]
    assert [d["id"] for d in call(staged_api, "GET", "/destinations")[1]] == ["google_dm", "meta_ads"]
