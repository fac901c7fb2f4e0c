"""`audience-relay deploy` into local AWS, then the pipeline on what it deployed.

The stage is deployed by the real command (wheel built, artifacts uploaded, every stack in
order) into the in-process moto server the local runner uses, whose Step Functions executes
definitions. moto's CloudFormation ignores `DefinitionSubstitutions` and keeps the machines it
creates apart from the Step Functions that executes, so each machine of the deployed stack is
created there under its deployed name and role, with the stack's substitutions applied from the
other stacks' exports as CloudFormation applies them. Then a completed input folder lands in the deployed input bucket, its S3
event goes through the deployed ingest queue to the ingest Lambda's handler (with the deployed
function's environment), which starts the deployed scheduler; the real prepare and deliver
jobs run as local processes and deliver into the deployed delivery bucket, with the lease and
the ledger in the deployed state table.
"""
import ast
import io
import json
import os
import re
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml
from cfnlint.decode import cfn_yaml

from audience_relay.deploy.stacks import INGEST_MODULES, Deployment, deploy, orchestration_stack
from audience_relay.orchestration import ingest
from audience_relay.orchestration.local import engine
from audience_relay.orchestration.local.compute import ScriptCompute
from audience_relay.orchestration.local.stack import REGION, LocalAws, standard_children
from audience_relay.pipeline.config import load_config
from audience_relay.pipeline.generator import GeneratorSpec, generate
from tests.infra.iam_simulator import Request, decisions

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
BOUNDARY = f"arn:aws:iam::{ACCOUNT}:policy/audience-relay-boundary"
STAGE = f"s{uuid.uuid4().hex[:6]}"
PREFIX = f"audience-relay-{STAGE}-"


def _config(path: Path) -> Path:
    path.write_text(yaml.safe_dump({"version": 1, "destinations": [{
        "id": "lake_drop", "kind": "s3", "profile": "s3_objects", "id_types": ["email", "phone", "maid"], "max_batch_size": 400,
        "sync_mode": "mirror",
        "credentials": {"secret_arn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:audience-relay/{STAGE}/lake_drop"},
        "connection": {"bucket": f"{PREFIX}{ACCOUNT}-delivery", "prefix": "partner/"},
        "audiences": {"lake_high_value": ["seg_0001", "seg_0002", "seg_0003"]},
    }, {
        # A second destination with a credential of its own: the first one's job must not read it.
        "id": "lake_archive", "kind": "s3", "profile": "s3_objects", "id_types": ["email"], "active": False,
        "credentials": {"secret_arn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:audience-relay/{STAGE}/lake_archive"},
        "connection": {"bucket": f"{PREFIX}{ACCOUNT}-delivery", "prefix": "archive/"},
        "audiences": {"lake_archive_all": ["seg_0001"]},
    }]}))
    return path


@pytest.fixture(scope="module")
def stage(spark, tmp_path_factory):
    """The stage deployed by `deploy` into local AWS; yields (local AWS, outputs, config path).

    After `spark`, whose moto server fixture points the environment at another moto.
    """
    config = _config(tmp_path_factory.mktemp("config") / "destinations.yaml")
    with LocalAws() as aws, pytest.MonkeyPatch.context() as env:
        for key, value in aws.environment().items():
            env.setenv(key, value)
        engine.install(None, retry_scale=0.01)   # before the machines are created: moto parses them then
        plan = Deployment(STAGE, BOUNDARY, str(config))
        deploy(plan, load_config(config))
        yield aws, plan.outputs, config


def _exports(aws: LocalAws) -> dict[str, str]:
    return {e["Name"]: e["Value"] for e in aws.client("cloudformation").list_exports()["Exports"]}


def _resolve(value, exports: dict[str, str]) -> str:
    """The two forms the rendered stack substitutes with: an import of this stage's export, an ARN."""
    if "Fn::ImportValue" in value:
        return exports[value["Fn::ImportValue"]["Fn::Sub"].replace("${Stage}", STAGE)]
    pseudo = {"${AWS::Partition}": "aws", "${AWS::Region}": REGION, "${AWS::AccountId}": ACCOUNT, "${Stage}": STAGE}
    return re.sub(r"\$\{[A-Za-z:]+\}", lambda m: pseudo[m.group(0)], value["Fn::Sub"])


def _deployed_definitions(aws: LocalAws, config: Path) -> dict[str, dict]:
    """The stack's machines by short name, with `DefinitionSubstitutions` applied."""
    exports, definitions = _exports(aws), {}
    for resource in orchestration_stack(load_config(config))["Resources"].values():
        if resource["Type"] != "AWS::StepFunctions::StateMachine":
            continue
        properties = resource["Properties"]
        name = properties["StateMachineName"]["Fn::Sub"].replace("${Stage}", STAGE)
        definition = properties["DefinitionString"]
        for placeholder, value in properties["DefinitionSubstitutions"].items():
            definition = definition.replace(f"${{{placeholder}}}", _resolve(value, exports))
        assert "${" not in definition, name
        definitions[name.removeprefix(PREFIX)] = json.loads(definition)
    return definitions


def _executable_machines(aws: LocalAws, config: Path) -> dict[str, str]:
    """The stack's machines created in the Step Functions that executes; returns their ARNs by short name."""
    sfn = aws.client("stepfunctions")
    role = aws.client("iam").get_role(RoleName=f"{PREFIX}machines")["Role"]["Arn"]
    return {name: sfn.create_state_machine(name=f"{PREFIX}{name}", definition=json.dumps(standard_children(definition)),
                                           roleArn=role)["stateMachineArn"]
            for name, definition in _deployed_definitions(aws, config).items()}


def _glue_job_role(aws: LocalAws, job: str) -> str:
    """The role a deployed Glue job runs under, read from the stage's stack templates (moto keeps
    the templates and creates the roles, not the Glue jobs). moto's CloudFormation does not attach
    a role's `ManagedPolicyArns`: they are attached here as CloudFormation does."""
    cloudformation, exports = aws.client("cloudformation"), _exports(aws)
    for stack in cloudformation.describe_stacks()["Stacks"]:
        if not stack["StackName"].startswith(PREFIX):
            continue
        body = cloudformation.get_template(StackName=stack["StackName"])["TemplateBody"]
        template = body if isinstance(body, dict) else cfn_yaml.loads(body)
        for resource in template["Resources"].values():
            name = (resource.get("Properties") or {}).get("Name")
            if resource["Type"] == "AWS::Glue::Job" and isinstance(name, dict) and name.get("Fn::Sub", "").replace("${Stage}", STAGE) == job:
                logical = resource["Properties"]["Role"]["Fn::GetAtt"][0]
                (role,) = [r["PhysicalResourceId"] for r in cloudformation.describe_stack_resources(StackName=stack["StackName"])[
                    "StackResources"] if r.get("LogicalResourceId") == logical]
                for policy in template["Resources"][logical]["Properties"].get("ManagedPolicyArns", []):
                    aws.client("iam").attach_role_policy(RoleName=role, PolicyArn=_resolve(policy, exports))
                return role
    raise AssertionError(f"no deployed Glue job {job}")


def _role_policies(aws: LocalAws, role: str) -> dict[str, dict]:
    """Every identity policy of the role as IAM holds it: inline and attached managed ones."""
    iam = aws.client("iam")
    policies = {name: iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
                for name in iam.list_role_policies(RoleName=role)["PolicyNames"]}
    for attached in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
        version = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]["DefaultVersionId"]
        policies[attached["PolicyName"]] = iam.get_policy_version(PolicyArn=attached["PolicyArn"], VersionId=version)["PolicyVersion"]["Document"]
    return {name: _document(document) for name, document in policies.items()}


def _document(answered: dict | str) -> dict:
    """IAM answers URL-encoded JSON, which boto3 decodes; an inline policy moto's CloudFormation
    created comes back as the Python repr of the document."""
    if isinstance(answered, dict):
        return answered
    text = unquote(answered)
    return json.loads(text) if text.startswith('{"') else ast.literal_eval(text)


def test_each_deliver_job_reads_the_secrets_of_the_destinations_it_delivers_and_no_other(stage):
    """Judged by an IAM simulator on the policies CloudFormation created: a destination's job reads
    its own secret; the job of destinations registered since the deploy reads theirs, not the
    deployed destinations'."""
    aws, _, config = stage
    secrets = aws.client("secretsmanager")
    # moto's CloudFormation does not create secrets: created here from the deployed template as
    # CloudFormation would (name and tags), so their ARNs end as Secrets Manager's do.
    orchestration = aws.client("cloudformation").get_template(StackName=f"{PREFIX}orchestration")["TemplateBody"]
    for resource in orchestration["Resources"].values():
        if resource["Type"] == "AWS::SecretsManager::Secret":
            tags = [{"Key": t["Key"], "Value": t["Value"]} for t in resource["Properties"].get("Tags", [])]
            secrets.create_secret(Name=resource["Properties"]["Name"]["Fn::Sub"].replace("${Stage}", STAGE), SecretString="x", Tags=tags)
    secrets.create_secret(Name=f"audience-relay/{STAGE}/registered_later", SecretString="token")   # by an operator
    arns = {destination: secrets.describe_secret(SecretId=f"audience-relay/{STAGE}/{destination}")["ARN"]
            for destination in ("lake_drop", "lake_archive", "registered_later")}
    tags = {destination: {tag["Key"]: tag["Value"] for tag in secrets.describe_secret(SecretId=arn).get("Tags", [])}
            for destination, arn in arns.items()}
    readers = {"lake_drop": "destination-lake_drop", "lake_archive": "destination-lake_archive",
               "registered_later": "destination-_registered"}
    for reader, machine in readers.items():
        job = _deployed_definitions(aws, config)[machine]["States"]["Deliver"]["Arguments"]["JobName"]
        role = _glue_job_role(aws, job)
        asked = [Request(_role_policies(aws, role), "secretsmanager:GetSecretValue", arn, ACCOUNT,
                         f"arn:aws:iam::{ACCOUNT}:role/{role}",
                         {f"aws:ResourceTag/{key}": value for key, value in tags[secret].items()})
                 for secret, arn in arns.items()]
        readable = {secret for secret, decision in zip(arns, decisions(asked)) if decision == "Allowed"}
        assert readable == {reader}, (machine, job, role, readable)


def test_a_deliver_job_may_delete_older_committed_snapshot_copies_and_no_run_data(stage):
    """A commit deletes the committed copies beyond `snapshots_kept` (pipeline/snapshots.py)."""
    aws, outputs, config = stage
    job = _deployed_definitions(aws, config)["destination-lake_drop"]["States"]["Deliver"]["Arguments"]["JobName"]
    role = _glue_job_role(aws, job)
    work = f"arn:aws:s3:::{outputs['storage']['WorkBucket']}"
    objects = [f"{work}/snapshots/lake_drop/r1/members/part-00000.parquet", f"{work}/runs/r1/snapshot/lake_drop/part-00000.parquet"]
    asked = [Request(_role_policies(aws, role), "s3:DeleteObject", arn, ACCOUNT, f"arn:aws:iam::{ACCOUNT}:role/{role}") for arn in objects]
    assert decisions(asked) == ["Allowed", "ImplicitlyDenied"]


def test_deploy_uploaded_the_wheel_without_spark_the_emr_bootstrap_the_ingest_zip_scripts_and_config(stage):
    aws, outputs, _ = stage
    s3 = aws.client("s3")
    artifacts = outputs["storage"]["ArtifactsBucket"]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=artifacts)["Contents"]}
    (ingest_zip,) = [k for k in keys if k.startswith("dist/ingest-")]
    (lambda_zip,) = [k for k in keys if k.startswith("dist/lambda-")]   # the feedback Lambda's (and the control plane's)
    assert keys == {"dist/audience_relay-0.1.0-py3-none-any.whl", "emr/bootstrap.sh", "jobs/prepare.py", "jobs/deliver.py",
                    "jobs/feedback.py", "config/deployed.yaml", "config/destinations.yaml", ingest_zip, lambda_zip}
    handler = zipfile.ZipFile(io.BytesIO(s3.get_object(Bucket=artifacts, Key=ingest_zip)["Body"].read()))
    assert sorted(handler.namelist()) == sorted(["audience_relay/__init__.py", *(f"audience_relay/{m}" for m in INGEST_MODULES)])
    wheel = zipfile.ZipFile(io.BytesIO(s3.get_object(Bucket=artifacts, Key="dist/audience_relay-0.1.0-py3-none-any.whl")["Body"].read()))
    metadata = wheel.read("audience_relay-0.1.0.dist-info/METADATA").decode()
    pyspark = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: pyspark")]
    assert pyspark and all("; extra ==" in line for line in pyspark)  # only through extras: Glue keeps its own Spark
    assert "audience_relay/pipeline/log4j2-redacting.properties" in wheel.namelist()
    # One top-level name: a Glue job with our wheel can import any other library's `jobs` or `pipeline`.
    assert {name.split("/")[0] for name in wheel.namelist()} == {"audience_relay", "audience_relay-0.1.0.dist-info"}
    cloudformation = aws.client("cloudformation")
    for name in ("keys", "messaging", "storage", "state", "compute", "orchestration"):
        assert cloudformation.describe_stacks(StackName=f"{PREFIX}{name}")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    compute = cloudformation.describe_stacks(StackName=f"{PREFIX}compute")["Stacks"][0]
    assert {"ParameterKey": "LibraryWheel", "ParameterValue": "dist/audience_relay-0.1.0-py3-none-any.whl"} in compute["Parameters"]


def test_the_job_scripts_run_from_the_uploaded_wheel_outside_the_checkout(stage, tmp_path):
    """As on Glue and EMR: the wheel pip-installed, the script downloaded on its own beside it."""
    aws, outputs, _ = stage
    s3, artifacts = aws.client("s3"), outputs["storage"]["ArtifactsBucket"]
    wheel = tmp_path / "audience_relay-0.1.0-py3-none-any.whl"
    s3.download_file(artifacts, "dist/audience_relay-0.1.0-py3-none-any.whl", str(wheel))
    s3.download_file(artifacts, "jobs/prepare.py", str(tmp_path / "prepare.py"))
    site = tmp_path / "site"   # the dependencies are this environment's; the libraries only the wheel's
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)], check=True)
    # PYTHONPATH's entries come before the checkout's editable install (a finder appended to sys.meta_path).
    environment = {**os.environ, "PYTHONPATH": str(site)}
    probe = ("import audience_relay.jobs.prepare as p, audience_relay.transforms.identifiers, audience_relay.pipeline.config as c; "
             "print(p.__file__); print(c.DEFAULT_CONFIG.read_text()[:9])")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=environment, capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.splitlines() == [f"{site}/audience_relay/jobs/prepare.py", "# audienc"]   # the package data is in the wheel too
    helped = subprocess.run([sys.executable, "prepare.py", "--help"], cwd=tmp_path, env=environment, capture_output=True, text=True)
    assert helped.returncode == 0 and "--input" in helped.stdout, helped.stderr


def test_a_second_deploy_of_the_same_stage_updates_in_place(stage, capsys):
    """Parameters not given keep the stage's values; the pipeline test below runs on the stage as this deploy left it."""
    _, outputs, config = stage
    plan = Deployment(STAGE, BOUNDARY, str(config))
    deploy(plan, load_config(config))
    assert "failed" not in capsys.readouterr().out
    # moto replaces resources on an update (a new key each time); names are the stage's either way.
    assert plan.outputs["storage"] == outputs["storage"] and plan.outputs["state"] == outputs["state"]


def test_a_completed_input_in_the_deployed_bucket_is_delivered_through_the_deployed_stage(stage, spark, tmp_path, monkeypatch):
    aws, outputs, config = stage
    arns = _executable_machines(aws, config)
    assert arns["scheduler"] == outputs["orchestration"]["SchedulerArn"]
    s3 = aws.client("s3")
    work, delivery = outputs["storage"]["WorkBucket"], f"{PREFIX}{ACCOUNT}-delivery"
    compute = ScriptCompute({f"{PREFIX}prepare": ROOT / "jobs" / "prepare.py", f"{PREFIX}deliver-lake_drop": ROOT / "jobs" / "deliver.py"},
                            work, tmp_path / "work", aws.environment(), s3)
    engine.install(compute, retry_scale=0.01)

    day = generate(spark, GeneratorSpec(records=1500, destinations=("lake_drop",)), tmp_path / "day1")
    bucket = outputs["storage"]["InputBucket"]
    for folder, prefix in ((day["membership"], "incoming/day1/"), (day["consent"], "consent/")):
        for path in Path(folder).iterdir():
            if not path.name.startswith("."):
                s3.upload_file(str(path), bucket, prefix + path.name)
    assert "incoming/day1/_SUCCESS" in {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}

    # The test plays the Lambda service's queue poller: moto's would run the function in Docker.
    function = aws.client("lambda").get_function_configuration(FunctionName=f"{PREFIX}ingest")
    (mapping,) = aws.client("lambda").list_event_source_mappings(FunctionName=f"{PREFIX}ingest")["EventSourceMappings"]
    aws.client("lambda").update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    # S3 notifies the ingest queue of the marker (moto ignores the bucket's notification: sent here as S3 sends it).
    sqs = aws.client("sqs")
    queue = outputs["messaging"]["IngestQueueUrl"]
    event = {"Records": [{"eventName": "ObjectCreated:Put", "eventTime": "2026-12-01T06:00:00.000Z",
                          "s3": {"bucket": {"name": bucket}, "object": {"key": "incoming/day1/_SUCCESS", "sequencer": "0A1B2C"}}}]}
    sqs.send_message(QueueUrl=aws.queue_url(queue), MessageBody=json.dumps(event))
    message = sqs.receive_message(QueueUrl=aws.queue_url(queue), MaxNumberOfMessages=10)["Messages"]
    for key, value in function["Environment"]["Variables"].items():
        monkeypatch.setenv(key, value)
    records = [{"messageId": m["MessageId"], "body": m["Body"]} for m in message]
    assert ingest.handler({"Records": records}, None) == {"batchItemFailures": []}

    (started,) = aws.executions(arns["scheduler"])
    execution = aws.wait(started["executionArn"], timeout=600)
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause, [label for label, _ in compute.runs])
    assert [label for label, _ in compute.runs] == [f"{PREFIX}prepare", f"{PREFIX}deliver-lake_drop"]

    run_id = execution.output["run_id"]
    summary = json.loads(s3.get_object(Bucket=work, Key=f"runs/{run_id}/delivery/lake_drop/summary.json")["Body"].read())
    assert summary["status"] == "SUCCEEDED" and summary["accounting"]["reconciles"]
    delivered = [o["Key"] for o in s3.list_objects_v2(Bucket=delivery, Prefix="partner/")["Contents"]]
    assert len(delivered) == summary["batches"]["delivered"] > 0
    ledger = aws.client("dynamodb").scan(TableName=outputs["state"]["StateTable"])["Items"]
    assert sum(item["pk"]["S"] == f"RUN#{run_id}" for item in ledger) == len(delivered)
    lease = [item for item in ledger if item["pk"]["S"] == "LEASE#lake_drop"]
    assert lease and "owner" not in lease[0]
    # Then the scheduler started the run's delivery feedback, which waits for the platforms' counts.
    (feedback,) = aws.executions(arns["feedback"])
    assert feedback["name"] == run_id and feedback["status"] == "RUNNING"
    assert json.loads(aws.client("stepfunctions").describe_execution(executionArn=feedback["executionArn"])["input"]) == {
        "run_id": run_id, "wait_seconds": 6 * 3600}
