"""The run catalog's Lambda on a real PostgreSQL server (TLS, password) and a local AWS: the DSN
built from the RDS-style secret at each call, migrations, a run's record, and the scheduler's
RecordInCatalog step, whose failure is alerted and dead-lettered without failing the run."""
import json
import uuid

import boto3
import psycopg
import pytest

from audience_relay.connectors.catalog.postgres import CatalogError, RunCatalog
from audience_relay.connectors.catalog.source import CatalogSource, CatalogSourceError
from audience_relay.lambdas import catalog as catalog_lambda
from audience_relay.orchestration.local.engine import JobFailed
from audience_relay.orchestration.local.runner import LocalStateMachines
from audience_relay.orchestration.machines.specs import MachineSpec, Resources
from audience_relay.report.catalog import CatalogUsageError

pytestmark = pytest.mark.integration

META = MachineSpec("meta_ads", "http_api", "meta_custom_audiences", "meta_ads")
ROWS = {"to_deliver": 8, "pending": 0, "unchanged": 1, "consent_filtered": 1, "unmapped": 2, "rejected": 3}
DELIVERED = {"delivered": 8, "pending": 0, "unchanged": 1, "consent_filtered": 1, "unmapped": 2, "rejected": 3}


def manifest(input_uri: str) -> dict:
    return {"input_rows": 15, "rejected": {"by_reason": {"invalid_email": 3}}, "inputs": {"membership": input_uri},
            "destinations": {"meta_ads": {"accounting": {"input_rows": 15, "rows": ROWS}, "batches": 1}}}


def summary() -> dict:
    return {"status": "SUCCEEDED", "resume_at": None, "retries": 0, "fenced": 0,
            "batches": {"pending": 0, "delivered": 1, "deferred": 0, "failed": 0}, "accounting": {"rows": DELIVERED}}


@pytest.fixture
def catalog_database(postgres_server):
    """A database owned by its own admin role, as Aurora's: (database, role, password)."""
    name, role, password = f"catalog_{uuid.uuid4().hex[:8]}", f"admin_{uuid.uuid4().hex[:8]}", "first:p@ss/word"
    with psycopg.connect(postgres_server.dsn("postgres"), autocommit=True) as connection:
        connection.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        connection.execute(f'CREATE DATABASE "{name}" OWNER {role}')
    return name, role, password


def catalog_environment(postgres_server, database: str, secret_arn: str, work_bucket: str, port: int | None = None) -> dict:
    return {"CATALOG_SECRET_ARN": secret_arn, "CATALOG_HOST": "127.0.0.1", "CATALOG_PORT": str(port or postgres_server.port),
            "CATALOG_DATABASE": database, "WORK_BUCKET": work_bucket}


def test_the_lambda_builds_the_dsn_from_the_rotating_secret_then_migrates_and_records_a_run(moto_server, postgres_server,
                                                                                           catalog_database):
    database, role, password = catalog_database
    secrets, s3 = boto3.client("secretsmanager"), boto3.client("s3")
    arn = secrets.create_secret(Name=f"rds!cluster-{uuid.uuid4().hex[:8]}",
                                SecretString=json.dumps({"username": role, "password": password}))["ARN"]
    bucket = f"work-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="runs/w-20261202-abc/manifest.json", Body=json.dumps(manifest("s3://lake/in/")).encode())
    s3.put_object(Bucket=bucket, Key="runs/w-20261202-abc/delivery/meta_ads/summary.json", Body=json.dumps(summary()).encode())
    environ = catalog_environment(postgres_server, database, arn, bucket)

    assert catalog_lambda.handle({"action": "migrate"}, environ, secrets) == {"applied": ["0001.runs-files-accounting"]}
    assert catalog_lambda.handle({"action": "migrate"}, environ, secrets) == {"applied": []}
    # RDS rotates the admin password: the next call reads the secret again, not a DSN kept from before.
    with psycopg.connect(postgres_server.dsn("postgres"), autocommit=True) as connection:
        connection.execute(f"ALTER ROLE {role} PASSWORD 'second'")
    secrets.put_secret_value(SecretId=arn, SecretString=json.dumps({"username": role, "password": "second"}))
    assert catalog_lambda.handle({"action": "record", "run_id": "w-20261202-abc"}, environ, secrets) == {
        "recorded": "w-20261202-abc", "destinations": 1}

    dsn = CatalogSource.from_environment(environ).resolve(secrets)
    assert "sslmode=require" in dsn
    with psycopg.connect(dsn) as connection:   # the connection the Lambda makes is encrypted
        assert connection.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
    found = RunCatalog(dsn).run("w-20261202-abc")
    assert (found["trigger"], found["input_uri"]) == ("window", "s3://lake/in/")
    [line] = found["accounting"]
    assert (line["destination_id"], line["status"], line["input_rows"], line["delivered"], line["rejected"]) == (
        "meta_ads", "SUCCEEDED", 15, 8, 3)


def test_bad_events_and_settings_are_named_and_never_echo_the_password(moto_server, postgres_server, catalog_database):
    database, role, password = catalog_database
    secrets = boto3.client("secretsmanager")
    environ = catalog_environment(postgres_server, database, "unused", "work")
    with pytest.raises(CatalogSourceError, match="no run catalog configured"):
        catalog_lambda.handle({"action": "migrate"}, {}, secrets)
    with pytest.raises(CatalogSourceError, match="without CATALOG_HOST"):
        CatalogSource.from_environment({"CATALOG_SECRET_ARN": "arn"})
    with pytest.raises(CatalogSourceError, match="CATALOG_PORT: 'x'"):
        CatalogSource.from_environment({"CATALOG_SECRET_ARN": "arn", "CATALOG_HOST": "h", "CATALOG_PORT": "x"})
    with pytest.raises(CatalogUsageError, match="action: 'drop'"):
        catalog_lambda.handle({"action": "drop"}, {"CATALOG_DSN": postgres_server.dsn(database)}, secrets)
    with pytest.raises(CatalogUsageError, match="run_id: '../x'"):
        catalog_lambda.handle({"action": "record", "run_id": "../x"}, {"CATALOG_DSN": postgres_server.dsn(database)}, secrets)
    not_rds = secrets.create_secret(Name=f"plain-{uuid.uuid4().hex[:8]}", SecretString=password)["ARN"]
    with pytest.raises(CatalogSourceError, match="not the JSON RDS keeps") as raised:
        catalog_lambda.handle({"action": "migrate"}, {**environ, "CATALOG_SECRET_ARN": not_rds}, secrets)
    assert password not in str(raised.value)
    wrong = secrets.create_secret(Name=f"rds!old-{uuid.uuid4().hex[:8]}",
                                  SecretString=json.dumps({"username": role, "password": "stale"}))["ARN"]
    with pytest.raises(CatalogError, match=f"127.0.0.1:{postgres_server.port}/{database}") as raised:
        catalog_lambda.handle({"action": "migrate"}, {**environ, "CATALOG_SECRET_ARN": wrong}, secrets)
    assert "stale" not in str(raised.value)


class CatalogJobs:
    """Plays prepare (the manifest) and deliver (the summary) in the local work bucket, and the
    catalog Lambda (`lambda:invoke`) with the real handler."""

    def __init__(self, resources: Resources, s3, environ: dict, secrets) -> None:
        self.resources, self.s3, self.environ, self.secrets = resources, s3, environ, secrets
        self.invocations: list[dict] = []

    def run_glue_job(self, job_name: str, arguments: dict[str, str]) -> None:
        run = f"runs/{arguments['--run_id']}"
        if job_name == self.resources.prepare_job:
            self.s3.put_object(Bucket=self.resources.work_bucket, Key=f"{run}/manifest.json",
                               Body=json.dumps(manifest(arguments["--input"])).encode())
        else:
            self.s3.put_object(Bucket=self.resources.work_bucket, Key=f"{run}/delivery/{arguments['--destination']}/summary.json",
                               Body=json.dumps(summary()).encode())

    def run_emr_step(self, cluster_id: str, args: list[str]) -> None:
        raise JobFailed("no EMR here")

    def invoke_function(self, name: str, payload: dict) -> dict:
        assert name == self.resources.catalog_function
        self.invocations.append(payload)
        return catalog_lambda.handle(payload, self.environ, self.secrets)


def test_the_scheduler_records_each_run_and_a_catalog_down_is_alerted_without_failing_the_run(
        postgres_server, catalog_database, monkeypatch):
    database, role, password = catalog_database
    resources = Resources(catalog_function="audience-relay-catalog")
    run = {"input": "s3://lake/in/day1/", "consent": "s3://lake/consent/"}
    with LocalStateMachines([META], resources, retry_scale=0.0) as local:
        for name, value in local.aws.environment().items():   # the handler reads the run through pipeline.storage
            monkeypatch.setenv(name, value)
        secrets = local.aws.client("secretsmanager")
        arn = secrets.create_secret(Name="rds!cluster-local", SecretString=json.dumps({"username": role, "password": password}))["ARN"]
        environ = catalog_environment(postgres_server, database, arn, resources.work_bucket)
        catalog_lambda.handle({"action": "migrate"}, environ, secrets)
        jobs = CatalogJobs(resources, local.aws.client("s3"), environ, secrets)
        local.bind(jobs)

        recorded = local.run("scheduler", "r1", {**run, "run_id": "r1"})
        assert recorded.status == "SUCCEEDED", recorded.cause
        assert "RecordInCatalog" in recorded.states and "CatalogAlert" not in recorded.states
        accounting = RunCatalog(CatalogSource.from_environment(environ).resolve(secrets)).run("r1")["accounting"]
        assert [(a["destination_id"], a["delivered"]) for a in accounting] == [("meta_ads", 8)]

        jobs.environ = {**environ, "CATALOG_PORT": "1"}   # the catalog unreachable: retried, then alerted
        unrecorded = local.run("scheduler", "r2", {**run, "run_id": "r2"})
        assert unrecorded.status == "SUCCEEDED", unrecorded.cause   # the delivery stands
        assert jobs.invocations[-4:] == [{"action": "record", "run_id": "r2"}] * 4   # the first call and three retries
        [alert] = local.alerts()
        assert alert["subject"] == "audience-relay: run not recorded in the run catalog"
        assert (alert["message"]["run_id"], alert["message"]["phase"]) == ("r2", "CatalogRecord")
        [letter] = local.dead_letters()
        assert letter["phase"] == "CatalogRecord" and "CatalogError" in json.dumps(letter["error"])
