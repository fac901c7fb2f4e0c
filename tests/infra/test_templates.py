"""infra/ templates: cfn-lint clean, and the project's least-privilege and encryption rules."""
from pathlib import Path

import pytest

from tests.infra.policy import cfn_lint, load, problems, yaml_aliases

TEMPLATES = sorted((Path(__file__).resolve().parents[2] / "infra" / "templates").glob("*.yaml"))


def test_the_stacks_are_all_there():
    assert {t.stem for t in TEMPLATES} >= {"keys", "messaging", "storage", "state"}


def test_cfn_lint_reports_nothing_on_any_template():
    assert cfn_lint(*TEMPLATES) == ""


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda path: path.stem)
def test_template_follows_the_project_rules(template):
    assert yaml_aliases(template) == []
    assert problems(load(template)) == []


def _role(statement: dict, **extra) -> dict:
    return {"Type": "AWS::IAM::Role", **extra, "Properties": {
        "AssumeRolePolicyDocument": {}, "Policies": [{"PolicyName": "p", "PolicyDocument": {"Statement": [statement]}}]}}


@pytest.mark.parametrize("resource, expected", [
    (_role({"Sid": "S", "Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*"}), "wildcard action 's3:*'"),
    (_role({"Sid": "S", "Effect": "Allow", "Action": ["s3:Get*"], "Resource": "arn:aws:s3:::b/*"}), "wildcard action 's3:Get*'"),
    (_role({"Sid": "S", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}), "Resource '*' without a reason"),
    (_role({"Sid": "S", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}), "role without PermissionsBoundary"),
    (_role({"Sid": "S", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}) | {"Properties": {
        "PermissionsBoundary": "b", "ManagedPolicyArns": ["arn:aws:iam::aws:policy/AdministratorAccess"]}},
     "managed policy AdministratorAccess without a reason"),
    ({"Type": "AWS::S3::Bucket", "Properties": {}}, "bucket not encrypted under KMS"),
    ({"Type": "AWS::S3::Bucket", "Properties": {"BucketEncryption": {"ServerSideEncryptionConfiguration": [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}}}, "SSE-S3 needs a reason"),
    ({"Type": "AWS::S3::Bucket", "Properties": {}}, "bucket does not block all public access"),
    ({"Type": "AWS::S3::Bucket", "Properties": {}}, "bucket policy does not deny requests without TLS"),
    ({"Type": "AWS::DynamoDB::Table", "Properties": {"SSESpecification": {"SSEEnabled": True}}}, "table not encrypted"),
    ({"Type": "AWS::DynamoDB::Table", "Properties": {}}, "table without point-in-time recovery"),
    ({"Type": "AWS::SQS::Queue", "Properties": {"RedrivePolicy": {}}}, "Queue without KmsMasterKeyId"),
    ({"Type": "AWS::SQS::Queue", "Properties": {"KmsMasterKeyId": "k"}}, "queue without a redrive policy"),
    ({"Type": "AWS::SNS::Topic", "Properties": {}}, "Topic without KmsMasterKeyId"),
    ({"Type": "AWS::Logs::LogGroup", "Properties": {}}, "LogGroup without KmsKeyId"),
    ({"Type": "AWS::SecretsManager::Secret", "Properties": {}}, "Secret without KmsKeyId"),
    ({"Type": "AWS::KMS::Key", "Properties": {"KeyPolicy": {}}}, "KMS key without rotation"),
    ({"Type": "AWS::Logs::LogGroup", "DeletionPolicy": "Retain", "Properties": {"KmsKeyId": "k"}}, "use RetainExceptOnCreate"),
    ({"Type": "AWS::IAM::ManagedPolicy", "Properties": {"PolicyDocument": {"Statement": [
        {"Sid": "S", "Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": {"Fn::ImportValue": "x-StateTableArn"}}]}}},
     "without a dynamodb:LeadingKeys condition"),
    ({"Type": "AWS::IAM::ManagedPolicy", "Properties": {"PolicyDocument": {"Statement": [
        {"Sid": "S", "Effect": "Allow", "Action": ["dynamodb:DeleteItem"], "Resource": {"Fn::ImportValue": "x-StateTableArn"},
         "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["LEASE#*"]}}}]}}},
     "may delete lease items"),
], ids=lambda value: value if isinstance(value, str) else "")
def test_the_rules_catch_what_they_forbid(resource, expected):
    assert any(expected in problem for problem in problems({"Resources": {"R": resource}})), problems({"Resources": {"R": resource}})


def test_a_dead_letter_queue_needs_fourteen_days_and_an_alarm():
    queues = {
        "Dlq": {"Type": "AWS::SQS::Queue", "Properties": {"KmsMasterKeyId": "k", "MessageRetentionPeriod": 345600}},
        "Main": {"Type": "AWS::SQS::Queue", "Properties": {"KmsMasterKeyId": "k", "RedrivePolicy": {
            "deadLetterTargetArn": {"Fn::GetAtt": ["Dlq", "Arn"]}, "maxReceiveCount": 5}}},
    }
    assert problems({"Resources": queues}) == ["Dlq: dead-letter queue not kept 14 days", "Dlq: dead-letter queue without an alarm on its depth"]
    queues["Dlq"]["Properties"]["MessageRetentionPeriod"] = 1209600
    queues["Alarm"] = {"Type": "AWS::CloudWatch::Alarm", "Properties": {"Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["Dlq", "QueueName"]}}]}}
    assert problems({"Resources": queues}) == []


def test_yaml_aliases_are_found(tmp_path):
    template = tmp_path / "t.yaml"
    template.write_text("A: &x\n  B: !Ref C\nD: *x\n")
    assert yaml_aliases(template) == ["t.yaml: YAML alias *x (CloudFormation refuses aliases)"]


def test_quarantined_input_files_expire_like_inputs_and_deploy_names_their_prefix():
    """Quarantined files are inputs that failed their checks: raw identifiers, kept for
    inspection, then expired with the inputs; the prefix is the config's."""
    from audience_relay.deploy.stacks import Deployment
    from audience_relay.pipeline.config import DEFAULT_CONFIG

    storage = load(next(t for t in TEMPLATES if t.stem == "storage"))
    rules = {rule["Id"]: rule for rule in storage["Resources"]["InputBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-quarantine"]["Prefix"] == {"Ref": "QuarantinePrefix"}
    assert rules["expire-quarantine"]["ExpirationInDays"] == {"Ref": "InputRetentionDays"}
    parameters = Deployment("dev", "arn:aws:iam::123456789012:policy/b", str(DEFAULT_CONFIG)).parameters("storage")
    assert parameters["QuarantinePrefix"] == "quarantine/"


def test_the_control_planes_read_write_and_run_policies_cover_each_route_once():
    """Per-route permissions: every method of the API is in exactly one of the three managed
    policies, so granting `write` never grants starting runs or deciding on removals."""
    import fnmatch
    import re

    template = load(next(t for t in TEMPLATES if t.name == "control.yaml"))
    paths = template["Resources"]["Api"]["Properties"]["Body"]["paths"]
    routes = {(method.upper(), path) for path, methods in paths.items() for method in methods}
    grants = [(name, resource["Fn::Sub"].split("/v1/", 1)[1])
              for name in ("ControlReadPolicy", "ControlWritePolicy", "ControlRunPolicy")
              for resource in template["Resources"][name]["Properties"]["PolicyDocument"]["Statement"][0]["Resource"]]
    # A request's resource is METHOD/path with real ids; IAM's `*` matches any characters, `/` too.
    covered = {route: sorted({name for name, pattern in grants
                              if fnmatch.fnmatchcase(route[0] + re.sub(r"\{[^}]+\}", "x1", route[1]), pattern)})
               for route in routes}
    assert {route: names for route, names in covered.items() if len(names) != 1} == {}
    assert {("POST", "/destinations/{id}/runs"), ("POST", "/destinations/{id}/runs/{run}/removals")} == {
        route for route, names in covered.items() if names == ["ControlRunPolicy"]}
