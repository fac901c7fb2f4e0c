"""`audience-relay deploy`: the plan, the checks before anything is deployed, a rolled-back stack.

The real deploy of a stage, and the pipeline on it, is in test_deployed_pipeline.py.
"""
import io
import json
import re
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws
from moto.cloudformation.models import cloudformation_backends

from audience_relay.cli.main import main
from audience_relay.deploy.stacks import Deployment, _stack
from audience_relay.pipeline.config import DEFAULT_CONFIG

BOUNDARY = "arn:aws:iam::123456789012:policy/audience-relay-boundary"
EXAMPLE_SECRET = "secret:audience-relay/google-dm"
ROOT = Path(__file__).resolve().parents[2]


def stage_config(tmp_path, stage: str) -> str:
    """The embedded config with google_dm's secret where the stage's stack creates it."""
    path = tmp_path / "destinations.yaml"
    text = DEFAULT_CONFIG.read_text()
    assert EXAMPLE_SECRET in text
    path.write_text(text.replace(EXAMPLE_SECRET, f"secret:audience-relay/{stage}/google_dm"))
    return str(path)


def test_a_dry_run_prints_the_steps_in_order_and_calls_nothing(moto_server, capsys, tmp_path):
    stage = f"d{uuid.uuid4().hex[:6]}"
    assert main(["deploy", "--stage", stage, "--boundary", BOUNDARY, "--config", stage_config(tmp_path, stage), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    stacks = [line.split()[3] for line in lines if line.startswith("deploy: deploy stack")]
    assert stacks == [f"audience-relay-{stage}-{name}" for name in ("keys", "messaging", "storage", "state", "compute", "orchestration")]
    assert sum(line.startswith("deploy: upload") for line in lines) == 8
    assert not [s for s in boto3.client("cloudformation").list_stacks()["StackSummaries"] if stage in s["StackName"]]


def test_a_secret_the_deliver_role_cannot_read_stops_the_deploy_naming_the_destination(moto_server, capsys):
    assert main(["deploy", "--stage", "dev", "--boundary", BOUNDARY, "--dry-run"]) == 2  # the embedded config's secret
    error = capsys.readouterr().err
    assert "destinations.google_dm.credentials.secret_arn names secret 'audience-relay/google-dm'" in error
    assert "secret:audience-relay/dev/google_dm" in error
    assert "warning: destinations.meta_ads.credentials.env: Glue and EMR jobs have no variable META_ACCESS_TOKEN" in error


def test_a_complete_secret_arn_with_its_random_suffix_is_the_stages_secret(capsys, tmp_path):
    config = Path(stage_config(tmp_path, "dev"))
    config.write_text(config.read_text().replace("secret:audience-relay/dev/google_dm", "secret:audience-relay/dev/google_dm-Ab12Cd"))
    assert main(["deploy", "--stage", "dev", "--boundary", BOUNDARY, "--config", str(config), "--dry-run"]) == 0, capsys.readouterr().err
    config.write_text(config.read_text().replace("google_dm-Ab12Cd", "google_dm-other"))
    assert main(["deploy", "--stage", "dev", "--boundary", BOUNDARY, "--config", str(config), "--dry-run"]) == 2


def test_metas_app_secret_lives_under_the_destinations_own_secret_and_the_stack_creates_it(capsys, tmp_path):
    """Meta's app secret is a second secret of the destination, `<id>/<part>`: its deliver job
    reads it (the role allows `<id>/*`); naming another destination's is refused by key."""
    from audience_relay.deploy.stacks import orchestration_stack
    from audience_relay.pipeline.config import load_config

    config = Path(stage_config(tmp_path, "dev"))
    own = "arn:aws:secretsmanager:us-east-1:123456789012:secret:audience-relay/dev/meta_ads/app_secret"
    config.write_text(config.read_text().replace('account_id: "act_1234567890"', f'account_id: "act_1234567890"\n      app_secret: {{secret_arn: "{own}"}}', 1))
    assert "app_secret" in config.read_text()
    assert main(["deploy", "--stage", "dev", "--boundary", BOUNDARY, "--config", str(config), "--dry-run"]) == 0, capsys.readouterr().err
    resources = orchestration_stack(load_config(config))["Resources"]
    assert resources["MetaAdsAppSecretSecret"]["Properties"]["Name"] == {"Fn::Sub": "audience-relay/${Stage}/meta_ads/app_secret"}
    readable = resources["MetaAdsDeliverRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]["Resource"]
    assert [r["Fn::Sub"].rsplit(":secret:", 1)[1] for r in readable] == ["audience-relay/${Stage}/meta_ads-??????", "audience-relay/${Stage}/meta_ads/*"]
    config.write_text(config.read_text().replace("audience-relay/dev/meta_ads/app_secret", "audience-relay/dev/google_dm/app_secret"))
    assert main(["deploy", "--stage", "dev", "--boundary", BOUNDARY, "--config", str(config), "--dry-run"]) == 2
    assert "destinations.meta_ads.connection.app_secret.secret_arn names secret 'audience-relay/dev/google_dm/app_secret'" in capsys.readouterr().err


def test_a_schedule_needs_the_input_its_runs_read(capsys, tmp_path):
    command = ["deploy", "--stage", "dev", "--boundary", BOUNDARY, "--config", stage_config(tmp_path, "dev"), "--dry-run"]
    assert main([*command, "--schedule", "cron(0 6 * * ? *)"]) == 2
    assert "--schedule and --scheduled-input go together" in capsys.readouterr().err
    assert main([*command, "--schedule", "cron(0 6 * * ? *)", "--scheduled-input", "s3://lake/segments/dt={date}/"]) == 0
    printed = capsys.readouterr().out
    assert "ScheduleExpression=cron(0 6 * * ? *) ScheduledInput=s3://lake/segments/dt={date}/ ScheduleTimezone=UTC" in printed


def test_a_stack_left_rolled_back_by_a_failed_creation_is_deleted_and_created_again(monkeypatch, capsys):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)   # moto in this process
    with mock_aws():
        cloudformation = boto3.client("cloudformation", region_name="us-east-1")
        plan = Deployment("rb", BOUNDARY, str(DEFAULT_CONFIG))
        body = (Path(__file__).resolve().parents[2] / "infra" / "templates" / "keys.yaml").read_text()
        _stack(plan, cloudformation, "keys", body, {"Stage": "rb"})
        (stack,) = cloudformation_backends["123456789012"]["us-east-1"].stacks.values()
        stack.status = "ROLLBACK_COMPLETE"   # what CloudFormation leaves after a failed creation
        protection = []   # moto lacks UpdateTerminationProtection; AWS refuses to delete a protected stack
        cloudformation.meta.events.register("before-call.cloudformation.UpdateTerminationProtection",
                                            lambda params, **_: protection.append(params["body"]) or (AWSResponse("", 200, {}, None), {}))
        _stack(plan, cloudformation, "keys", body, {"Stage": "rb"})
        assert [(p["StackName"], p["EnableTerminationProtection"]) for p in protection] == [("audience-relay-rb-keys", "false")]
        described = cloudformation.describe_stacks(StackName="audience-relay-rb-keys")["Stacks"][0]
        assert described["StackStatus"] == "CREATE_COMPLETE" and described["StackId"] != stack.stack_id
        assert "is ROLLBACK_COMPLETE after a failed creation: delete it and create it again" in capsys.readouterr().out


def test_a_deploy_without_alert_email_or_schedule_keeps_what_the_stage_has(monkeypatch, capsys):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)   # moto in this process
    templates = Path(__file__).resolve().parents[2] / "infra" / "templates"
    with mock_aws():
        cloudformation = boto3.client("cloudformation", region_name="us-east-1")
        for alert_email in ("ops@example.com", None):
            plan = Deployment("keep", BOUNDARY, str(DEFAULT_CONFIG), alert_email=alert_email)
            for name in ("keys", "messaging"):
                _stack(plan, cloudformation, name, (templates / f"{name}.yaml").read_text(), plan.parameters(name))
            parameters = cloudformation.describe_stacks(StackName="audience-relay-keep-messaging")["Stacks"][0]["Parameters"]
            assert {"ParameterKey": "AlertEmail", "ParameterValue": "ops@example.com"} in parameters
        assert Deployment("keep", BOUNDARY, "c").parameters("orchestration") == {
            "Stage": "keep", "PermissionsBoundaryArn": BOUNDARY, "ScheduleExpression": None, "ScheduledInput": None, "ScheduleTimezone": None}


def test_with_api_cidrs_the_control_stack_follows_orchestration(capsys, tmp_path):
    command = ["deploy", "--stage", "dev", "--boundary", BOUNDARY, "--config", stage_config(tmp_path, "dev"), "--dry-run"]
    assert main([*command, "--api-cidrs", "10.0.0.0/8,192.0.2.0/24"]) == 0
    lines = capsys.readouterr().out.splitlines()
    stacks = [line.split()[3] for line in lines if line.startswith("deploy: deploy stack")]
    assert stacks[-2:] == ["audience-relay-dev-orchestration", "audience-relay-dev-control"]
    assert "AllowedSourceCidrs=10.0.0.0/8,192.0.2.0/24" in lines[-1]
    assert main(command) == 0
    assert "no --api-cidrs: the control plane stack is not deployed" in capsys.readouterr().out


def test_with_a_catalog_vpc_the_catalog_stack_follows_state_and_its_lambda_migrates_after_orchestration(capsys, tmp_path):
    command = ["deploy", "--stage", "dev", "--boundary", BOUNDARY, "--config", stage_config(tmp_path, "dev"), "--dry-run"]
    assert main([*command, "--catalog-vpc", "vpc-0abc", "--catalog-subnets", "subnet-a,subnet-b",
                 "--catalog-route-tables", "rtb-1,rtb-2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    stacks = [line.split()[3] for line in lines if line.startswith("deploy: deploy stack")]
    assert stacks == [f"audience-relay-dev-{name}" for name in ("keys", "messaging", "storage", "state", "catalog", "compute", "orchestration")]
    (catalog,) = [line for line in lines if line.startswith("deploy: deploy stack audience-relay-dev-catalog")]
    assert "VpcId=vpc-0abc SubnetIds=subnet-a,subnet-b EndpointRouteTableIds=rtb-1,rtb-2 VpcCidr=<CIDR of the VPC>" in catalog
    (orchestration,) = [line for line in lines if line.startswith("deploy: deploy stack audience-relay-dev-orchestration")]
    assert "CatalogCodeKey=dist/catalog-<hash>.zip" in orchestration
    assert any(line.startswith("deploy: upload <build>/catalog-<hash>.zip") for line in lines)
    assert lines[-2] == "deploy: apply the run catalog's migrations through the Lambda audience-relay-dev-catalog"
    # Without --catalog-route-tables the stage's endpoints are kept (the parameters not given).
    assert main([*command, "--catalog-vpc", "vpc-0abc", "--catalog-subnets", "subnet-a,subnet-b"]) == 0
    (catalog,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("deploy: deploy stack audience-relay-dev-catalog")]
    assert catalog.endswith("SubnetIds=subnet-a,subnet-b")
    for partial in (["--catalog-vpc", "vpc-0abc"], ["--catalog-subnets", "subnet-a"], ["--catalog-route-tables", ""]):
        assert main([*command, *partial]) == 2
        assert "--catalog-vpc and --catalog-subnets go together" in capsys.readouterr().err


def test_the_api_deployment_is_named_after_the_templates_content():
    from audience_relay.deploy.stacks import control_template

    rendered = control_template()
    (name,) = set(re.findall(r"\bApiDeployment[0-9a-f]{12}\b", rendered))
    assert "ApiDeployment\n" not in rendered and f"DeploymentId: !Ref {name}" in rendered


@pytest.mark.integration
def test_the_lambda_package_runs_on_the_lambda_runtimes_boto3_alone(tmp_path):
    """The zip has the library and pydantic/PyYAML/requests for Lambda's Linux; the runtime adds only boto3.
    Both Lambdas import from it: the control plane's and the feedback one."""
    import subprocess
    import sys
    import zipfile

    import boto3 as runtime_boto3
    from audience_relay.deploy.stacks import CATALOG_REQUIREMENTS, ingest_package, lambda_package

    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)], check=True,
                   capture_output=True)
    (wheel,) = tmp_path.glob("audience_relay-*.whl")
    archive = lambda_package(tmp_path, wheel)
    assert re.fullmatch(r"lambda-[0-9a-f]{12}\.zip", archive.name)
    zipfile.ZipFile(archive).extractall(tmp_path / "task")
    runtime = tmp_path / "runtime"   # what the python3.11 runtime has: boto3 and its dependencies
    runtime.mkdir()
    site = Path(runtime_boto3.__file__).parents[1]
    for package in ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py"):
        (runtime / package).symlink_to(site / package)
    probe = ("import sys, audience_relay.lambdas.control, audience_relay.lambdas.feedback; "
             "print(sorted(m for m in ('pyspark', 'pyarrow', 'pandas') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": f"{tmp_path / 'task'}:{runtime}", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]
    # The catalog Lambda's zip: PostgreSQL (psycopg's own libpq), the migrations, and pyarrow for
    # the run's outcome files; the window Lambda's zip with the catalog's client.
    catalog = lambda_package(tmp_path, wheel, "catalog", CATALOG_REQUIREMENTS)
    zipfile.ZipFile(catalog).extractall(tmp_path / "catalog")
    window = ingest_package(tmp_path, catalog=True)
    zipfile.ZipFile(window).extractall(tmp_path / "window")
    for task, probe in (("catalog", "import audience_relay.lambdas.catalog, psycopg, yoyo, pyarrow.parquet; "
                                    "from audience_relay.connectors.catalog.postgres import MIGRATIONS; "
                                    "print(psycopg.pq.__impl__, sorted(p.name for p in MIGRATIONS.glob('*.sql'))[0])"),
                        ("window", "import audience_relay.orchestration.ingest_window, audience_relay.connectors.catalog.postgres, psycopg; print(psycopg.pq.__impl__)")):
        done = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                              env={"PYTHONPATH": f"{tmp_path / task}:{runtime}", "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0 and done.stdout.split()[0] == "binary", done.stderr[-2000:]


def test_a_destination_without_credentials_and_a_paused_one_deploy_with_their_machines(capsys, tmp_path):
    import yaml

    from audience_relay.deploy.stacks import orchestration_stack
    from audience_relay.pipeline.config import load_config

    config = yaml.safe_load(Path(stage_config(tmp_path, "dev")).read_text())
    config["destinations"].append({"id": "lake_drop", "kind": "s3", "profile": "s3_objects", "active": False,
                                   "connection": {"bucket": "partner-bucket"}, "audiences": {"lake_all": ["seg_0001"]}})
    (tmp_path / "with-s3.yaml").write_text(yaml.safe_dump(config))
    assert main(["deploy", "--stage", "dev", "--boundary", BOUNDARY, "--config", str(tmp_path / "with-s3.yaml"), "--dry-run"]) == 0
    assert "lake_drop" not in capsys.readouterr().err   # an S3 destination writes with the deliver role: nothing to warn of
    machines = [r["Properties"]["StateMachineName"]["Fn::Sub"] for r in orchestration_stack(load_config(tmp_path / "with-s3.yaml"))[
        "Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    assert "audience-relay-${Stage}-destination-lake_drop" in machines   # paused: resuming it needs no deploy


class _Answer:
    def __init__(self, body: dict, function_error: bool) -> None:
        self.body, self.function_error = body, function_error

    @property
    def reply(self) -> dict:
        reply = {"Payload": io.BytesIO(json.dumps(self.body).encode())}
        return {**reply, "FunctionError": "Unhandled"} if self.function_error else reply


class _CatalogFunction:
    """Lambda's invoke for the catalog function: the scripted answers in turn."""

    def __init__(self, answers: list[_Answer]) -> None:
        self.answers, self.calls = answers, []

    def invoke(self, **request) -> dict:
        self.calls.append(request)
        return self.answers.pop(0).reply


def test_the_migrations_wait_for_a_paused_catalog_and_any_other_error_stops_the_deploy(monkeypatch, capsys):
    from audience_relay.deploy import stacks as deploy_module

    unreachable = _Answer({"errorType": "CatalogError", "errorMessage": "run catalog h:5432/audience_relay: cannot connect"}, True)
    function = _CatalogFunction([unreachable, unreachable, _Answer({"applied": ["0001.runs-files-accounting"]}, False)])
    monkeypatch.setattr(deploy_module.clients, "client", lambda service, **kwargs: function)
    monkeypatch.setattr(deploy_module.time, "sleep", lambda seconds: None)
    deploy_module._migrate_catalog(Deployment("dev", BOUNDARY, "c"))
    assert [call["Payload"] for call in function.calls] == [b'{"action": "migrate"}'] * 3
    assert "catalog migrations applied: 0001.runs-files-accounting" in capsys.readouterr().out
    # Three unreachable answers, or one of another kind, stop the deploy naming the function.
    function.answers = [unreachable] * 3
    with pytest.raises(deploy_module.DeployError, match="audience-relay-dev-catalog: CatalogError"):
        deploy_module._migrate_catalog(Deployment("dev", BOUNDARY, "c"))
    function.answers = [_Answer({"errorType": "UndefinedTable", "errorMessage": "relation does not exist"}, True)]
    with pytest.raises(deploy_module.DeployError, match="UndefinedTable: relation does not exist"):
        deploy_module._migrate_catalog(Deployment("dev", BOUNDARY, "c"))


def test_a_stack_no_update_can_leave_stops_the_deploy_saying_so():
    from audience_relay.deploy.stacks import DeployError

    class Stuck:
        def describe_stacks(self, StackName):
            return {"Stacks": [{"StackName": StackName, "StackStatus": "ROLLBACK_FAILED", "StackStatusReason": "Cluster: delete failed",
                                "Parameters": []}]}

    with pytest.raises(DeployError, match="audience-relay-dev-catalog is ROLLBACK_FAILED [(]Cluster: delete failed[)]"):
        _stack(Deployment("dev", BOUNDARY, "c"), Stuck(), "catalog", "{}", {"Stage": "dev"})
