"""The project's rules for infra/ templates, beyond what cfn-lint checks.

Least privilege: no Allow statement of an identity policy with a wildcard action, none on
`Resource: "*"` unless the resource's Metadata names the statement with the reason (a few
actions have no resource-level permissions), every role created with the permissions boundary;
statements on the state table limited by `dynamodb:LeadingKeys`, none deleting a lease.
Encryption: every bucket, table, queue, topic, log group and secret under a KMS key (a bucket
may use SSE-S3 only with a reason in its Metadata: access-log delivery requires it). Buckets
block public access, are versioned and refuse plain HTTP; tables have point-in-time recovery;
keys rotate; every dead-letter queue keeps 14 days and has an alarm. A resource kept past its
stack is kept with `RetainExceptOnCreate`, never `Retain`: a failed creation must not leave
named resources behind that block creating the stack again. CloudFormation refuses YAML
aliases, so a template must not use them.

Metadata exceptions live on the resource, so a reviewer sees them next to what they excuse:
    Metadata:
      audience-relay:
        encryption: <why not KMS>
        unscoped: {<statement Sid>: <why Resource "*">}
        managed_policies: {<AWS managed policy name>: <why its actions are needed>}   (the stage's own, imported: checked where defined)
        dead_letter_store: <why a queue without a redrive policy is itself a dead-letter store>
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from cfnlint.decode import decode

DLQ_RETENTION_SECONDS = 1_209_600  # 14 days


def cfn_lint(*paths: Path) -> str:
    """What cfn-lint reports on these templates ("" when nothing); it is installed beside this Python."""
    done = subprocess.run([str(Path(sys.executable).with_name("cfn-lint")), *map(str, paths)], capture_output=True, text=True)
    return f"exit {done.returncode}: {done.stdout}{done.stderr}" if done.returncode else done.stdout.strip()


def load(path: Path) -> dict:
    template, problems = decode(str(path))
    if problems:
        raise ValueError(f"{path}: {problems}")
    return template


def yaml_aliases(path: Path) -> list[str]:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)  # CloudFormation short forms
    events = yaml.parse(path.read_text(), Loader=Loader)
    return [f"{path.name}: YAML alias *{event.anchor} (CloudFormation refuses aliases)" for event in events if isinstance(event, yaml.AliasEvent)]


def _exceptions(resource: dict) -> dict:
    return (resource.get("Metadata") or {}).get("audience-relay") or {}


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _identity_policies(resource_type: str, properties: dict) -> list[dict]:
    if resource_type == "AWS::IAM::Role":
        return [p["PolicyDocument"] for p in properties.get("Policies", [])]
    if resource_type in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        return [properties["PolicyDocument"]]
    return []


def _policy_problems(name: str, resource: dict) -> list[str]:
    problems = []
    unscoped = _exceptions(resource).get("unscoped") or {}
    for document in _identity_policies(resource["Type"], resource.get("Properties", {})):
        for statement in document.get("Statement", []):
            if statement.get("Effect") != "Allow":
                continue
            sid = statement.get("Sid", "?")
            for action in _as_list(statement.get("Action", [])):
                if isinstance(action, str) and "*" in action:
                    problems.append(f"{name}: statement {sid} allows wildcard action {action!r}")
            if "NotAction" in statement:
                problems.append(f"{name}: statement {sid} uses NotAction")
            if "*" in _as_list(statement.get("Resource", [])) and sid not in unscoped:
                problems.append(f"{name}: statement {sid} allows Resource '*' without a reason under Metadata audience-relay.unscoped")
            problems += _state_table_problems(name, sid, statement)
    return problems


def _state_table_problems(name: str, sid: str, statement: dict) -> list[str]:
    """The state table holds leases, ledgers, quotas and claims side by side: a statement on it
    names the partition keys it may touch, and none may delete a lease (its fencing token)."""
    if "StateTableArn" not in str(statement.get("Resource")):
        return []
    keys = ((statement.get("Condition") or {}).get("ForAllValues:StringLike") or {}).get("dynamodb:LeadingKeys")
    if not keys:
        return [f"{name}: statement {sid} on the state table without a dynamodb:LeadingKeys condition"]
    if "dynamodb:DeleteItem" in _as_list(statement.get("Action")) and any(k.startswith(("LEASE#", "*")) for k in _as_list(keys)):
        return [f"{name}: statement {sid} may delete lease items (it would reset their fencing tokens)"]
    return []


def _kms_problem(name: str, resource_type: str, properties: dict, exceptions: dict) -> str | None:
    if resource_type == "AWS::S3::Bucket":
        rules = (properties.get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration", [])
        algorithms = {r.get("ServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules}
        if "aws:kms" in algorithms or ("AES256" in algorithms and exceptions.get("encryption")):
            return None
        return f"{name}: bucket not encrypted under KMS (SSE-S3 needs a reason under Metadata audience-relay.encryption)"
    if resource_type == "AWS::DynamoDB::Table":
        sse = properties.get("SSESpecification") or {}
        ok = sse.get("SSEEnabled") is True and sse.get("SSEType") == "KMS" and sse.get("KMSMasterKeyId")
        return None if ok else f"{name}: table not encrypted under the stage's KMS key"
    key_property = {"AWS::SQS::Queue": "KmsMasterKeyId", "AWS::SNS::Topic": "KmsMasterKeyId",
                    "AWS::Logs::LogGroup": "KmsKeyId", "AWS::SecretsManager::Secret": "KmsKeyId"}.get(resource_type)
    if key_property and not properties.get(key_property):
        return f"{name}: {resource_type} without {key_property}"
    return None


def _tls_only_buckets(resources: dict) -> set[str]:
    """Logical ids of buckets whose policy denies requests without TLS."""
    buckets = set()
    for resource in resources.values():
        if resource["Type"] != "AWS::S3::BucketPolicy":
            continue
        properties = resource["Properties"]
        for statement in properties["PolicyDocument"].get("Statement", []):
            insecure = (statement.get("Condition") or {}).get("Bool", {}).get("aws:SecureTransport")
            if statement.get("Effect") == "Deny" and str(insecure).lower() == "false":
                bucket = properties["Bucket"]
                buckets.add(bucket.get("Ref") if isinstance(bucket, dict) else bucket)
    return buckets


def _referenced(value, logical_id: str) -> bool:
    """Whether a property value points at `logical_id` (Ref, GetAtt or inside Sub/Join)."""
    if isinstance(value, dict):
        if value.get("Ref") == logical_id:
            return True
        if "Fn::GetAtt" in value and _as_list(value["Fn::GetAtt"])[0] == logical_id:
            return True
        return any(_referenced(v, logical_id) for v in value.values())
    if isinstance(value, list):
        return any(_referenced(v, logical_id) for v in value)
    return False


def problems(template: dict) -> list[str]:
    resources = template.get("Resources", {})
    found: list[str] = []
    tls_only = _tls_only_buckets(resources)
    alarms = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    dead_letter_targets = {
        _as_list(r["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"])[0]
        for r in resources.values()
        if r["Type"] == "AWS::SQS::Queue" and "Fn::GetAtt" in ((r.get("Properties") or {}).get("RedrivePolicy") or {}).get("deadLetterTargetArn", {})
    }
    for name, resource in resources.items():
        resource_type, properties = resource["Type"], resource.get("Properties") or {}
        exceptions = _exceptions(resource)
        found += _policy_problems(name, resource)
        if resource.get("DeletionPolicy") == "Retain":
            found.append(f"{name}: DeletionPolicy Retain keeps it after a failed creation; use RetainExceptOnCreate")
        kms = _kms_problem(name, resource_type, properties, exceptions)
        if kms:
            found.append(kms)
        if resource_type == "AWS::IAM::Role" and not properties.get("PermissionsBoundary"):
            found.append(f"{name}: role without PermissionsBoundary")
        for arn in properties.get("ManagedPolicyArns", []) if resource_type == "AWS::IAM::Role" else []:
            if isinstance(arn, dict) and "Fn::ImportValue" in arn:
                continue   # the stage's own managed policy: its statements are checked in the stack that defines it
            policy = str(arn.get("Fn::Sub", arn) if isinstance(arn, dict) else arn).rsplit("/", 1)[-1]
            if policy not in (exceptions.get("managed_policies") or {}):
                found.append(f"{name}: managed policy {policy} without a reason under Metadata audience-relay.managed_policies")
        if resource_type == "AWS::S3::Bucket":
            block = properties.get("PublicAccessBlockConfiguration") or {}
            if not all(block.get(k) is True for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")):
                found.append(f"{name}: bucket does not block all public access")
            if (properties.get("VersioningConfiguration") or {}).get("Status") != "Enabled":
                found.append(f"{name}: bucket not versioned")
            if name not in tls_only:
                found.append(f"{name}: bucket policy does not deny requests without TLS")
        if resource_type == "AWS::DynamoDB::Table":
            if not (properties.get("PointInTimeRecoverySpecification") or {}).get("PointInTimeRecoveryEnabled"):
                found.append(f"{name}: table without point-in-time recovery")
        if resource_type == "AWS::KMS::Key" and properties.get("EnableKeyRotation") is not True:
            found.append(f"{name}: KMS key without rotation")
        if resource_type == "AWS::SQS::Queue":
            is_dead_letter_queue = name in dead_letter_targets or exceptions.get("dead_letter_store")
            if not is_dead_letter_queue and "RedrivePolicy" not in properties:
                found.append(f"{name}: queue without a redrive policy (or a reason under Metadata audience-relay.dead_letter_store)")
            if is_dead_letter_queue:
                if properties.get("MessageRetentionPeriod") != DLQ_RETENTION_SECONDS:
                    found.append(f"{name}: dead-letter queue not kept 14 days")
                if not any(_referenced(alarm.get("Dimensions"), name) for alarm in alarms):
                    found.append(f"{name}: dead-letter queue without an alarm on its depth")
    return found
