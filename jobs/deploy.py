"""`audience-relay deploy`: build the library, deploy a stage's stacks in order, upload the artifacts.

Order: keys, messaging, storage, state (infra/templates/), then the artifacts (the wheel Glue
installs, the zip EMR's spark-submit ships, the job scripts, the config) into the artifacts
bucket, then compute (which names the wheel) and the orchestration stack rendered from the
config. A stack that exists is updated; one without changes is left as it is. `--dry-run`
prints the same steps without building or calling AWS.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.exceptions import ClientError, WaiterError

from jobs.config import DEFAULT_CONFIG, load_config
from orchestration.cloudformation import stack_template
from orchestration.definitions import machine_specs

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "infra" / "templates"
BASE_STACKS = ("keys", "messaging", "storage", "state")
PACKAGES = ("transforms", "connectors", "orchestration", "jobs")
NO_CHANGES = "No updates are to be performed"


class DeployError(RuntimeError):
    """A stack did not reach a complete state; the message holds its status and failed events."""


@dataclass
class Deployment:
    stage: str
    boundary: str
    config: str
    alert_email: str = ""
    dry_run: bool = False
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)

    def stack_name(self, name: str) -> str:
        return f"audience-relay-{self.stage}-{name}"

    def parameters(self, name: str, **extra: str) -> dict[str, str]:
        given = {"Stage": self.stage, **extra}
        if name in ("compute", "orchestration"):
            given["PermissionsBoundaryArn"] = self.boundary
        if name == "messaging" and self.alert_email:
            given["AlertEmail"] = self.alert_email
        return given


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", required=True, help="stage name (dev, prod): part of every resource name")
    parser.add_argument("--boundary", required=True, help="ARN of the managed policy every role is created with as its permissions boundary")
    parser.add_argument("--config", help="destinations YAML the machines are rendered from and the jobs read (default: the embedded example)")
    parser.add_argument("--alert-email", "--alert_email", default="", help="subscribe this address to the alert topic")
    parser.add_argument("--dry-run", "--dry_run", action="store_true", help="print the steps; build and call nothing")


def run_deploy(args: argparse.Namespace) -> int:
    if not TEMPLATES.is_dir():
        raise DeployError(f"{TEMPLATES} not found: deploy from a checkout of the repository")
    config = args.config or str(DEFAULT_CONFIG)
    load_config(config)  # a bad config stops here, naming the key, before anything is deployed
    try:
        deploy(Deployment(args.stage, args.boundary, config, args.alert_email, args.dry_run))
    except DeployError as error:
        print(f"audience-relay deploy: {error}", file=sys.stderr)
        return 1
    return 0


def deploy(plan: Deployment) -> None:
    cloudformation = None if plan.dry_run else boto3.client("cloudformation")
    for name in BASE_STACKS:
        _stack(plan, cloudformation, name, (TEMPLATES / f"{name}.yaml").read_text(), plan.parameters(name))
    with tempfile.TemporaryDirectory(prefix="audience-relay-deploy-") as build:
        wheel = _build(plan, Path(build))
        bucket = plan.outputs.get("storage", {}).get("ArtifactsBucket", f"<ArtifactsBucket of {plan.stack_name('storage')}>")
        uploads = {
            f"dist/{wheel.name}": wheel,
            "dist/audience_relay.zip": wheel.with_name("audience_relay.zip"),
            "jobs/prepare.py": ROOT / "jobs" / "prepare.py",
            "jobs/deliver.py": ROOT / "jobs" / "deliver.py",
            "config/destinations.yaml": Path(plan.config),
        }
        s3 = None if plan.dry_run else boto3.client("s3")
        for key, source in uploads.items():
            _say(f"upload {source} to s3://{bucket}/{key}")
            if s3:
                s3.upload_file(str(source), bucket, key)
    _stack(plan, cloudformation, "compute", (TEMPLATES / "compute.yaml").read_text(), plan.parameters("compute", LibraryWheel=f"dist/{wheel.name}"))
    orchestration = json.dumps(stack_template(machine_specs(load_config(plan.config).active_destinations)))
    _stack(plan, cloudformation, "orchestration", orchestration, plan.parameters("orchestration"))


def _say(message: str) -> None:
    print(f"deploy: {message}", flush=True)


def _build(plan: Deployment, build: Path) -> Path:
    """The wheel Glue installs (`--additional-python-modules`) and the zip spark-submit ships (`--py-files`)."""
    _say(f"build the wheel and the EMR zip from {ROOT}")
    if plan.dry_run:
        return Path("<build>") / "audience_relay-<version>-py3-none-any.whl"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(build), str(ROOT)], check=True)
    with zipfile.ZipFile(build / "audience_relay.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for package in PACKAGES:
            for path in sorted((ROOT / package).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    archive.write(path, path.relative_to(ROOT))
    (wheel,) = build.glob("audience_relay-*.whl")
    return wheel


def _stack(plan: Deployment, cloudformation, name: str, body: str, parameters: dict[str, str]) -> None:
    stack = plan.stack_name(name)
    _say(f"deploy stack {stack} ({name}) with " + " ".join(f"{k}={v}" for k, v in parameters.items()))
    if cloudformation is None:
        return
    request = {"StackName": stack, "TemplateBody": body, "Capabilities": ["CAPABILITY_NAMED_IAM"],
               "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()]}
    try:
        cloudformation.describe_stacks(StackName=stack)
        exists = True
    except ClientError:
        exists = False
    try:
        if exists:
            cloudformation.update_stack(**request)
            cloudformation.get_waiter("stack_update_complete").wait(StackName=stack, WaiterConfig={"Delay": 5, "MaxAttempts": 360})
        else:
            cloudformation.create_stack(**request, EnableTerminationProtection=True)
            cloudformation.get_waiter("stack_create_complete").wait(StackName=stack, WaiterConfig={"Delay": 5, "MaxAttempts": 360})
    except ClientError as error:
        if NO_CHANGES not in str(error):
            raise
        _say(f"{stack}: no changes")
    except WaiterError:
        raise DeployError(_failure(cloudformation, stack)) from None
    description = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    plan.outputs[name] = {o["OutputKey"]: o["OutputValue"] for o in description.get("Outputs", [])}


def _failure(cloudformation, stack: str) -> str:
    status = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    failed = [f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', '')}"
              for e in cloudformation.describe_stack_events(StackName=stack)["StackEvents"] if e["ResourceStatus"].endswith("FAILED")]
    return f"{stack} ended {status['StackStatus']} ({status.get('StackStatusReason', '')}); failed: {'; '.join(failed[:5]) or 'none listed'}"
