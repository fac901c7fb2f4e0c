"""`audience-relay deploy` against moto server: every stack in order, the artifacts uploaded, idempotent."""
import io
import uuid
import zipfile

import boto3
import pytest

from jobs.cli import main

BOUNDARY = "arn:aws:iam::123456789012:policy/audience-relay-boundary"


def test_a_dry_run_prints_the_steps_in_order_and_calls_nothing(moto_server, capsys):
    stage = f"d{uuid.uuid4().hex[:6]}"
    assert main(["deploy", "--stage", stage, "--boundary", BOUNDARY, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    stacks = [line.split()[3] for line in lines if line.startswith("deploy: deploy stack")]
    assert stacks == [f"audience-relay-{stage}-{name}" for name in ("keys", "messaging", "storage", "state", "compute", "orchestration")]
    assert sum(line.startswith("deploy: upload") for line in lines) == 5
    assert not [s for s in boto3.client("cloudformation").list_stacks()["StackSummaries"] if stage in s["StackName"]]


@pytest.mark.integration
def test_deploy_builds_uploads_and_deploys_every_stack_and_a_second_run_changes_nothing(moto_server, capsys):
    stage = f"d{uuid.uuid4().hex[:6]}"
    assert main(["deploy", "--stage", stage, "--boundary", BOUNDARY]) == 0, capsys.readouterr().err
    cloudformation = boto3.client("cloudformation")
    for name in ("keys", "messaging", "storage", "state", "compute", "orchestration"):
        stack = cloudformation.describe_stacks(StackName=f"audience-relay-{stage}-{name}")["Stacks"][0]
        assert stack["StackStatus"] == "CREATE_COMPLETE"
    artifacts = f"audience-relay-{stage}-123456789012-artifacts"
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=artifacts)["Contents"]}
    assert keys == {"dist/audience_relay-0.1.0-py3-none-any.whl", "dist/audience_relay.zip", "jobs/prepare.py", "jobs/deliver.py",
                    "config/destinations.yaml"}
    wheel = boto3.client("s3").get_object(Bucket=artifacts, Key="dist/audience_relay-0.1.0-py3-none-any.whl")["Body"].read()
    metadata = zipfile.ZipFile(io.BytesIO(wheel)).read("audience_relay-0.1.0.dist-info/METADATA").decode()
    pyspark = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: pyspark")]
    assert pyspark and all("; extra ==" in line for line in pyspark)  # only through extras: Glue keeps its own Spark
    assert "jobs/log4j2-redacting.properties" in zipfile.ZipFile(io.BytesIO(wheel)).namelist()
    compute = cloudformation.describe_stacks(StackName=f"audience-relay-{stage}-compute")["Stacks"][0]
    assert {"ParameterKey": "LibraryWheel", "ParameterValue": "dist/audience_relay-0.1.0-py3-none-any.whl"} in compute["Parameters"]
    capsys.readouterr()
    assert main(["deploy", "--stage", stage, "--boundary", BOUNDARY]) == 0, capsys.readouterr().err
