"""The stacks deploy in order into moto server's CloudFormation, importing each other's exports
(the orchestration stack rendered by `audience-relay definitions --stack`).

moto creates KMS keys, queues, topics, buckets, tables and roles from a template, and skips the
types it does not implement (Glue jobs and security configurations, bucket policies, alarms):
those, and the properties moto ignores (bucket versioning and lifecycle, table PITR and TTL), are
checked by cfn-lint and tests/infra/policy.py only. What moto does create is checked here.
"""
import json
import uuid
from pathlib import Path

import boto3
import pytest

from audience_relay.cli.main import main
from audience_relay.deploy.stacks import control_template, ingest_package
from tests.infra.policy import load

TEMPLATES = Path(__file__).resolve().parents[2] / "infra" / "templates"
ORDER = ["keys", "messaging", "storage", "state", "compute"]
BOUNDARY = "arn:aws:iam::123456789012:policy/audience-relay-boundary"


@pytest.fixture(scope="module")
def deployed(moto_server, tmp_path_factory) -> dict:
    stage = f"t{uuid.uuid4().hex[:6]}"
    cloudformation = boto3.client("cloudformation")
    parameters = {
        "compute": {"PermissionsBoundaryArn": BOUNDARY, "LibraryWheel": "dist/audience_relay-0.1.0-py3-none-any.whl"},
        "orchestration": {"PermissionsBoundaryArn": BOUNDARY, "LibraryWheel": "dist/audience_relay-0.1.0-py3-none-any.whl"},
    }
    build = tmp_path_factory.mktemp("stack")
    ingest = ingest_package(build)
    parameters["orchestration"]["IngestCodeKey"] = f"dist/{ingest.name}"
    rendered = build / "orchestration.json"
    assert main(["definitions", "--stack", str(rendered)]) == 0
    library = ingest.with_name("lambda-0123456789ab.zip")   # moto stores the code; it runs no Lambda
    library.write_bytes(ingest.read_bytes())
    parameters["orchestration"]["LambdaCodeKey"] = f"dist/{library.name}"
    parameters["control"] = {"PermissionsBoundaryArn": BOUNDARY, "ControlCodeKey": f"dist/{library.name}", "AllowedSourceCidrs": "10.0.0.0/8"}
    bodies = {name: (TEMPLATES / f"{name}.yaml").read_text() for name in ORDER} | {"orchestration": rendered.read_text(),
                                                                                   "control": _control_without_api_deployment(build)}
    outputs = {}
    for name in [*ORDER, "orchestration", "control"]:
        stack = f"audience-relay-{stage}-{name}"
        given = {"Stage": stage, **parameters.get(name, {})}
        cloudformation.create_stack(
            StackName=stack, TemplateBody=bodies[name], Capabilities=["CAPABILITY_NAMED_IAM"],
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in given.items()])
        cloudformation.get_waiter("stack_create_complete").wait(StackName=stack, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        description = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
        assert description["StackStatus"] == "CREATE_COMPLETE", (stack, description.get("StackStatusReason"))
        outputs[name] = {o["OutputKey"]: o["OutputValue"] for o in description.get("Outputs", [])}
        if name == "storage":  # the Lambda's code must be there before the orchestration stack
            for code in (ingest, library):
                boto3.client("s3").upload_file(str(code), outputs[name]["ArtifactsBucket"], f"dist/{code.name}")
    return {"stage": stage, "outputs": outputs}


def _control_without_api_deployment(build: Path) -> str:
    """moto ignores a REST API's OpenAPI `Body`, so it refuses a deployment of the API ("no methods"):
    the deployment and stage are only linted."""
    rendered = build / "control.yaml"
    rendered.write_text(control_template())
    template = load(rendered)
    for name in [n for n, r in template["Resources"].items() if r["Type"] in ("AWS::ApiGateway::Deployment", "AWS::ApiGateway::Stage")]:
        del template["Resources"][name]
    return json.dumps(template)


def test_the_key_rotates_and_every_queue_and_topic_uses_it(deployed):
    key_arn = deployed["outputs"]["keys"]["DataKeyArn"]
    assert boto3.client("kms").get_key_rotation_status(KeyId=key_arn)["KeyRotationEnabled"]
    sqs = boto3.client("sqs")
    for output in ("IngestQueueUrl", "FailuresQueueUrl"):
        attributes = sqs.get_queue_attributes(QueueUrl=deployed["outputs"]["messaging"][output], AttributeNames=["All"])["Attributes"]
        assert attributes["KmsMasterKeyId"] == key_arn and attributes["MessageRetentionPeriod"] == "1209600"
    topic = boto3.client("sns").get_topic_attributes(TopicArn=deployed["outputs"]["messaging"]["AlertTopicArn"])["Attributes"]
    assert topic["KmsMasterKeyId"] == key_arn


def test_the_ingest_queue_hands_failing_messages_to_its_dead_letter_queue(deployed):
    sqs = boto3.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=deployed["outputs"]["messaging"]["IngestQueueUrl"], AttributeNames=["RedrivePolicy"])
    assert f"audience-relay-{deployed['stage']}-ingest-dlq" in attributes["Attributes"]["RedrivePolicy"]


def test_buckets_are_named_per_stage_and_account_and_encrypted_under_the_key(deployed):
    key_arn = deployed["outputs"]["keys"]["DataKeyArn"]
    s3 = boto3.client("s3")
    for output in ("InputBucket", "WorkBucket", "DeliveryBucket", "ArtifactsBucket"):
        bucket = deployed["outputs"]["storage"][output]
        assert bucket.startswith(f"audience-relay-{deployed['stage']}-123456789012-")
        rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}


def test_the_state_table_has_the_key_schema_the_store_and_the_lock_use(deployed):
    table = boto3.client("dynamodb").describe_table(TableName=deployed["outputs"]["state"]["StateTable"])["Table"]
    assert {(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]} == {("pk", "HASH"), ("sk", "RANGE")}
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_the_machines_are_created_under_their_role_from_the_rendered_definitions(deployed):
    stepfunctions = boto3.client("stepfunctions")
    created = {m["name"]: m["stateMachineArn"] for m in stepfunctions.list_state_machines()["stateMachines"]}
    prefix = f"audience-relay-{deployed['stage']}-"
    assert deployed["outputs"]["orchestration"]["SchedulerArn"] == created[f"{prefix}scheduler"]
    machine = stepfunctions.describe_state_machine(stateMachineArn=created[f"{prefix}destination-meta_ads"])
    assert machine["roleArn"].endswith(f":role/{prefix}machines")
    assert '"QueryLanguage": "JSONata"' in machine["definition"]


def test_every_role_is_created_with_the_permissions_boundary(deployed):
    iam = boto3.client("iam")
    for role in ("prepare", "deliver", "emr-service", "emr-instance", "machines", "ingest", "control"):
        created = iam.get_role(RoleName=f"audience-relay-{deployed['stage']}-{role}")["Role"]
        assert created["PermissionsBoundary"]["PermissionsBoundaryArn"] == BOUNDARY


def test_the_ingest_lambda_runs_the_uploaded_handler_on_the_ingest_queue(deployed):
    prefix = f"audience-relay-{deployed['stage']}-"
    function = boto3.client("lambda").get_function_configuration(FunctionName=f"{prefix}ingest")
    assert function["Handler"] == "audience_relay.orchestration.ingest.handler" and function["Role"].endswith(f":role/{prefix}ingest")
    variables = function["Environment"]["Variables"]
    assert variables["SCHEDULER_ARN"] == deployed["outputs"]["orchestration"]["SchedulerArn"]
    assert variables["CONSENT_URI"] == f"s3://{deployed['outputs']['storage']['InputBucket']}/consent/"
    (mapping,) = boto3.client("lambda").list_event_source_mappings(FunctionName=f"{prefix}ingest")["EventSourceMappings"]
    assert mapping["EventSourceArn"] == deployed["outputs"]["messaging"]["IngestQueueArn"]


def test_the_control_api_is_created_with_its_lambda_and_stage(deployed):
    prefix = f"audience-relay-{deployed['stage']}-"
    (api,) = [a for a in boto3.client("apigateway").get_rest_apis()["items"] if a["name"] == f"{prefix}control"]
    assert deployed["outputs"]["control"]["ControlApiUrl"].startswith(f"https://{api['id']}.execute-api.")
    function = boto3.client("lambda").get_function_configuration(FunctionName=f"{prefix}control")
    assert function["Handler"] == "audience_relay.lambdas.control.handler"
    assert function["Environment"]["Variables"]["REGISTRY_TABLE"] == deployed["outputs"]["state"]["RegistryTable"]
