"""`audience-relay deploy`: build the library, deploy a stage's stacks in order, upload the artifacts.

Order: keys, messaging, storage, state (infra/templates/), the run catalog when the stage has
one (`--catalog-vpc`, or deployed before), then the artifacts (the wheel Glue installs and EMR's
bootstrap action installs, that bootstrap script, the Lambdas' zips, the job scripts, the
config) into the artifacts bucket, then compute (which names the wheel) and the orchestration
stack rendered from the config; then the catalog Lambda applies the catalog's migrations. A
stack that exists is updated; one without changes is left as it is; one whose creation failed
(ROLLBACK_COMPLETE, which CloudFormation cannot update) is deleted and created again; one in a
state no update can leave (a failed rollback) stops the deploy. `--dry-run` prints the same
steps without building or calling AWS.

The config is checked against the stage first: a destination whose credentials are in Secrets
Manager must name the secret the stack creates for it (`audience-relay/<stage>/<id>`, the only
one its deliver job's role may read); one reading an environment variable gets a warning, since Glue
and EMR jobs have no such variable.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError, WaiterError

from audience_relay.connectors.aws import clients
from audience_relay.control.registry import DestinationRegistry
from audience_relay.orchestration.cloudformation import ingest_visibility_timeout, names_own_secret, own_secret_path, secret_name, stack_template
from audience_relay.orchestration.ingest import COMPLETION_MARKER
from audience_relay.orchestration.machines.scheduler import CATALOG_LAMBDA_SECONDS
from audience_relay.orchestration.machines.specs import machine_specs
from audience_relay.pipeline.config import DEFAULT_CONFIG, Config, Ingest, load_config

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "infra" / "templates"
BASE_STACKS = ("keys", "messaging", "storage", "state")
# The ingest Lambda's code; the runtime brings boto3. Windows of Parquet files also need pyarrow
# (their footers are checked), built for Lambda's Linux.
INGEST_MODULES = ("orchestration/__init__.py", "orchestration/ingest.py", "orchestration/ingest_window.py",
                  "orchestration/file_checks.py", "orchestration/file_claims.py", "transforms/__init__.py", "transforms/contract.py",
                  "connectors/__init__.py", "connectors/catalog/__init__.py", "connectors/catalog/source.py",
                  *(f"connectors/aws/{name}.py" for name in ("__init__", "clients", "dynamodb", "s3", "sqs", "stepfunctions", "secretsmanager")))
PARQUET_REQUIREMENTS = ("pyarrow>=16,<22",)
# The library's Lambdas (the control plane, the feedback Lambda) validate the config with
# pipeline.config and call the destinations' APIs: beyond the runtime's boto3 they need these, built
# for Lambda's Linux; not the Spark side (pyarrow, pandas).
LAMBDA_REQUIREMENTS = ("pydantic>=2.6,<3", "pyyaml>=6", "requests>=2.31,<3", "google-auth>=2.30,<3", "requests-oauthlib>=2.0,<3",
                       "phonenumbers>=9.0,<10")
# The catalog Lambda reads a run's report (pyarrow for its outcome files, the Parquet windows' pin)
# and writes PostgreSQL; a window Lambda recording to the catalog needs psycopg too.
CATALOG_CLIENT_REQUIREMENTS = ("psycopg[binary]>=3.2,<4",)
CATALOG_REQUIREMENTS = (*CATALOG_CLIENT_REQUIREMENTS, "yoyo-migrations>=9,<10", *PARQUET_REQUIREMENTS)
CATALOG_CLIENT_MODULES = ("connectors/catalog/postgres.py",)
LAMBDA_PLATFORM = ("--platform", "manylinux2014_x86_64", "--implementation", "cp", "--python-version", "3.11", "--only-binary=:all:")
NO_CHANGES = "No updates are to be performed"
DEPLOYED_CONFIG = "config/deployed.yaml"   # the file given to deploy, as given
LIVE_CONFIG = "config/destinations.yaml"   # what the jobs read: its settings, the registry's destinations
SCHEDULE_PARAMETERS = ("ScheduleExpression", "ScheduledInput", "ScheduleTimezone")
CATALOG_PARAMETERS = ("VpcId", "SubnetIds", "EndpointRouteTableIds", "VpcCidr")
MIGRATE_ATTEMPTS, MIGRATE_RETRY_SECONDS = 3, 20


# Stack states no update can leave: someone has to act first.
STUCK = ("ROLLBACK_FAILED", "DELETE_FAILED", "UPDATE_ROLLBACK_FAILED")


class DeployError(RuntimeError):
    """A stack did not reach a complete state; the message holds its status and failed events."""


@dataclass
class Deployment:
    stage: str
    boundary: str
    config: str
    alert_email: str | None = None   # None: keep what the stack has
    dry_run: bool = False
    schedule: dict[str, str] | None = None   # the orchestration stack's Schedule* parameters; None: keep them
    api_cidrs: str = ""   # the control plane's allowed source ranges; empty: no control plane stack
    catalog: dict[str, str | None] | None = None   # the catalog stack's CATALOG_PARAMETERS (None: keep); None: keep the stage's
    ingest: Ingest = Ingest()   # the config's ingest section: the notification filter and the queue's timeout
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)

    def stack_name(self, name: str) -> str:
        return f"audience-relay-{self.stage}-{name}"

    def parameters(self, name: str, **extra: str) -> dict[str, str | None]:
        """The stack's parameters; None keeps the value an existing stack has (else its default),
        so a deploy without --schedule or --alert-email leaves a schedule or subscription alone."""
        given: dict[str, str | None] = {"Stage": self.stage, **extra}
        if name in ("compute", "orchestration", "control"):
            given["PermissionsBoundaryArn"] = self.boundary
        if name == "messaging":
            given["AlertEmail"] = self.alert_email
            given["IngestVisibilityTimeout"] = str(ingest_visibility_timeout(self.ingest.mode))
        if name == "storage":
            given["InputPrefix"] = self.ingest.prefix
            given["QuarantinePrefix"] = self.ingest.quarantine_prefix
            given["InputSuffix"] = self.ingest.suffix if self.ingest.mode == "window" else f"/{COMPLETION_MARKER}"
        if name == "orchestration":
            given.update(self.schedule if self.schedule is not None else dict.fromkeys(SCHEDULE_PARAMETERS))
        if name == "catalog":
            given.update(self.catalog or dict.fromkeys(CATALOG_PARAMETERS))
        return given


def orchestration_stack(config: Config, catalog: bool = False) -> dict:
    """The orchestration stack for a config's destinations (`definitions --stack`, deploy). Paused
    ones too: the scheduler reads which are active when it runs, and a resumed one needs its machine.
    `catalog`: the stage has the run catalog stack."""
    destinations = config.destinations
    window = config.ingest.model_dump() if config.ingest.mode == "window" else None
    return stack_template(machine_specs(destinations), secret_paths(destinations), window, catalog)


def secret_paths(destinations) -> list[str]:
    """The secrets the stack creates: `<id>` for each destination whose credentials are in Secrets
    Manager, `<id>/<part>` for its other secrets named so (whichever stage the config names:
    `credential_problems` checks that against the deployed one)."""
    paths = set()
    for destination in destinations:
        for key, arn in destination.secret_references().items():
            paths.add(destination.id if key == "credentials.secret_arn" else own_secret_path(None, destination.id, arn))
    return sorted(p for p in paths if p)


def credential_problems(config: Config, stage: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) about where the active destinations' credentials are, for this stage."""
    errors, warnings = [], []
    for destination in config.active_destinations:
        expected = secret_name(stage, destination.id)
        for key, arn in destination.secret_references().items():
            if not names_own_secret(stage, destination.id, arn):
                errors.append(f"destinations.{destination.id}.{key} names secret {arn.split(':secret:', 1)[1]!r}; its deliver "
                              f"job reads only its own, which the stack creates: ...:secret:{expected} (or {expected}/<part>)")
        if destination.credentials is None:
            continue   # no credential to keep: an S3 destination writes with the deliver role
        if not destination.credentials.secret_arn:
            warnings.append(f"destinations.{destination.id}.credentials.env: Glue and EMR jobs have no variable "
                            f"{destination.credentials.env}; use secret_arn ...:secret:{expected}")
    return errors, warnings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", required=True, help="stage name (dev, prod): part of every resource name")
    parser.add_argument("--boundary", required=True, help="ARN of the managed policy every role is created with as its permissions boundary")
    parser.add_argument("--config", help="destinations YAML the machines are rendered from and the jobs read (default: the embedded example)")
    parser.add_argument("--alert-email", "--alert_email", help="subscribe this address to the alert topic ('' removes it; "
                        "default: keep the stage's)")
    parser.add_argument("--dry-run", "--dry_run", action="store_true", help="print the steps; build and call nothing")
    parser.add_argument("--schedule", default="", help="cron(...) or rate(...): also start the scheduler on this clock")
    parser.add_argument("--scheduled-input", "--scheduled_input", default="",
                        help="the folder a scheduled run reads; {date} stands for the scheduled day (s3://b/segments/dt={date}/)")
    parser.add_argument("--timezone", default="UTC", help="time zone of --schedule's cron fields (default UTC; {date} is "
                        "always the UTC day of the scheduled time)")
    parser.add_argument("--api-cidrs", "--api_cidrs", default="",
                        help="comma-separated CIDR ranges allowed to call the control plane API; without it the control stack is not deployed")
    parser.add_argument("--no-schedule", "--no_schedule", action="store_true",
                        help="remove the stage's schedule (without --schedule or this, a deploy keeps it)")
    parser.add_argument("--catalog-vpc", "--catalog_vpc", default="",
                        help="deploy the run catalog (Aurora PostgreSQL) in this VPC; a later deploy without it keeps the stage's catalog")
    parser.add_argument("--catalog-subnets", "--catalog_subnets", default="",
                        help="comma-separated private subnets (two availability zones at least) of the catalog and its clients")
    parser.add_argument("--catalog-route-tables", "--catalog_route_tables", default=None,
                        help="the subnets' route tables: creates VPC endpoints for S3, DynamoDB, SQS, Step Functions and "
                             "Secrets Manager (not given: keep the stage's; '' removes them, when the subnets reach AWS "
                             "through a NAT gateway)")


def run_deploy(args: argparse.Namespace) -> int:
    if not TEMPLATES.is_dir():
        raise DeployError(f"{TEMPLATES} not found: deploy from a checkout of the repository")
    if bool(args.schedule) != bool(args.scheduled_input) or (args.schedule and args.no_schedule):
        print("audience-relay deploy: --schedule and --scheduled-input go together, without --no-schedule", file=sys.stderr)
        return 2
    config_path = args.config or str(DEFAULT_CONFIG)
    config = load_config(config_path)  # a bad config stops here, naming the key, before anything is deployed
    errors, warnings = credential_problems(config, args.stage)
    for warning in warnings:
        print(f"audience-relay deploy: warning: {warning}", file=sys.stderr)
    if errors:
        print("audience-relay deploy: " + "\n".join(errors), file=sys.stderr)
        return 2
    if bool(args.catalog_vpc) != bool(args.catalog_subnets) or (args.catalog_route_tables is not None and not args.catalog_vpc):
        print("audience-relay deploy: --catalog-vpc and --catalog-subnets go together (--catalog-route-tables with them)", file=sys.stderr)
        return 2
    schedule = None
    if args.schedule or args.no_schedule:
        schedule = dict(zip(SCHEDULE_PARAMETERS, (args.schedule, args.scheduled_input, args.timezone)))
    try:
        catalog = None
        if args.catalog_vpc:
            # The interface endpoints admit the VPC's own addresses: private DNS sends every
            # workload in the VPC to them, not only the catalog's clients.
            cidr = None if not args.catalog_route_tables else "<CIDR of the VPC>" if args.dry_run else _vpc_cidr(args.catalog_vpc)
            catalog = dict(zip(CATALOG_PARAMETERS, (args.catalog_vpc, args.catalog_subnets, args.catalog_route_tables, cidr)))
        deploy(Deployment(args.stage, args.boundary, config_path, args.alert_email, args.dry_run, schedule, args.api_cidrs,
                          ingest=config.ingest, catalog=catalog), config)
    except DeployError as error:
        print(f"audience-relay deploy: {error}", file=sys.stderr)
        return 1
    return 0


def deploy(plan: Deployment, config: Config) -> None:
    cloudformation = None if plan.dry_run else clients.client("cloudformation")
    for name in BASE_STACKS:
        _stack(plan, cloudformation, name, (TEMPLATES / f"{name}.yaml").read_text(), plan.parameters(name))
    catalog = plan.catalog is not None or (cloudformation is not None and _existing(cloudformation, plan.stack_name("catalog")) is not None)
    if catalog:
        _stack(plan, cloudformation, "catalog", (TEMPLATES / "catalog.yaml").read_text(), plan.parameters("catalog"))
    with tempfile.TemporaryDirectory(prefix="audience-relay-deploy-") as build:
        wheel, ingest = _build(plan, Path(build), catalog)
        library = _build_lambda(plan, Path(build), wheel)
        catalog_code = _build_lambda(plan, Path(build), wheel, "catalog", CATALOG_REQUIREMENTS) if catalog else None
        bucket = plan.outputs.get("storage", {}).get("ArtifactsBucket", f"<ArtifactsBucket of {plan.stack_name('storage')}>")
        uploads = {
            f"dist/{wheel.name}": wheel,
            f"dist/{ingest.name}": ingest,
            "emr/bootstrap.sh": ROOT / "infra" / "emr" / "bootstrap.sh",
            "jobs/prepare.py": ROOT / "jobs" / "prepare.py",
            "jobs/deliver.py": ROOT / "jobs" / "deliver.py",
            "jobs/feedback.py": ROOT / "jobs" / "feedback.py",
            DEPLOYED_CONFIG: Path(plan.config),
            f"dist/{library.name}": library,
            **({f"dist/{catalog_code.name}": catalog_code} if catalog_code else {}),
        }
        s3 = None if plan.dry_run else clients.client("s3")
        for key, source in uploads.items():
            _say(f"upload {source} to s3://{bucket}/{key}")
            if s3:
                s3.upload_file(str(source), bucket, key)
    live = _registry(plan, f"s3://{bucket}/{DEPLOYED_CONFIG}", f"s3://{bucket}/{LIVE_CONFIG}")
    config = live or config
    _stack(plan, cloudformation, "compute", (TEMPLATES / "compute.yaml").read_text(), plan.parameters("compute", LibraryWheel=f"dist/{wheel.name}"))
    template = orchestration_stack(config, catalog)
    with_catalog = {"CatalogCodeKey": f"dist/{catalog_code.name}"} if catalog_code else {}
    _stack(plan, cloudformation, "orchestration", json.dumps(template),
           plan.parameters("orchestration", IngestCodeKey=f"dist/{ingest.name}", LambdaCodeKey=f"dist/{library.name}",
                           LibraryWheel=f"dist/{wheel.name}", **with_catalog))
    if catalog:
        _migrate_catalog(plan)
    if plan.api_cidrs:
        _stack(plan, cloudformation, "control", control_template(plan.api_cidrs),
               plan.parameters("control", ControlCodeKey=f"dist/{library.name}", AllowedSourceCidrs=plan.api_cidrs))
    else:
        _say("no --api-cidrs: the control plane stack is not deployed")


def _vpc_cidr(vpc_id: str) -> str:
    try:
        return clients.client("ec2").describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]["CidrBlock"]
    except ClientError as error:
        raise DeployError(f"--catalog-vpc {vpc_id}: {error.response['Error']['Message']}") from None


def _migrate_catalog(plan: Deployment) -> None:
    """The catalog's schema changes not applied yet, applied by the catalog Lambda (the database
    is reachable only from inside its VPC)."""
    function = plan.stack_name("catalog")
    _say(f"apply the run catalog's migrations through the Lambda {function}")
    if plan.dry_run:
        return
    # A migration runs once per call: the client neither gives up before the function's timeout
    # nor sends the call again on its own; an unreachable database (a paused cluster) is retried here.
    client = clients.client("lambda", config=BotoConfig(read_timeout=CATALOG_LAMBDA_SECONDS + 30, retries={"max_attempts": 0}))
    for attempt in range(1, MIGRATE_ATTEMPTS + 1):
        answer = client.invoke(FunctionName=function, Payload=json.dumps({"action": "migrate"}).encode())
        result = json.loads(answer["Payload"].read() or b"null")
        if not answer.get("FunctionError"):
            _say(f"catalog migrations applied: {', '.join(result['applied']) or 'none (up to date)'}")
            return
        error = result if isinstance(result, dict) else {"errorMessage": str(result)}
        if error.get("errorType") != "CatalogError" or attempt == MIGRATE_ATTEMPTS:
            raise DeployError(f"the catalog's migrations failed in {function}: {error.get('errorType', 'error')}: "
                              f"{str(error.get('errorMessage'))[:500]}")
        _say(f"the catalog is not reachable yet (attempt {attempt} of {MIGRATE_ATTEMPTS}): {str(error.get('errorMessage'))[:200]}")
        time.sleep(MIGRATE_RETRY_SECONDS)


def _registry(plan: Deployment, deployed_uri: str, live_uri: str) -> Config | None:
    """The deployed config's destinations into the registry (the scheduler fans out to its active
    ones), then the live config the jobs read rewritten with every registered destination, those
    registered through the API too; returns that config, which the machines are rendered from."""
    table = plan.outputs.get("state", {}).get("RegistryTable", f"<RegistryTable of {plan.stack_name('state')}>")
    _say(f"register {deployed_uri}'s destinations in {table} and publish the registry to {live_uri}")
    if plan.dry_run:
        return None
    registry = DestinationRegistry(table)
    changed = registry.seed(deployed_uri, "audience-relay deploy")
    registry.publish(live_uri, settings_from=deployed_uri)
    _say(f"registered or updated: {', '.join(changed) or 'none'}")
    return load_config(live_uri)


def control_template(allowed_cidrs: str = "") -> str:
    """infra/templates/control.yaml with its API deployment named after the template's content
    and the allowed ranges: CloudFormation makes a new API Gateway deployment only for a new
    resource, and a changed API or resource policy applies only once deployed."""
    text = (TEMPLATES / "control.yaml").read_text()
    digest = hashlib.sha256((text + allowed_cidrs).encode()).hexdigest()[:12]
    return re.sub(r"\bApiDeployment\b", f"ApiDeployment{digest}", text)


def _say(message: str) -> None:
    print(f"deploy: {message}", flush=True)


def _build(plan: Deployment, build: Path, catalog: bool) -> tuple[Path, Path]:
    """The wheel Glue (`--additional-python-modules`) and EMR's bootstrap action install, and
    the ingest Lambda's zip (named by its content's hash, so a changed handler changes the
    stack's parameter and CloudFormation updates the function); with the `catalog`, a window
    Lambda's zip has psycopg to record there."""
    _say(f"build the wheel and the ingest Lambda zip from {ROOT}")
    if plan.dry_run:
        return Path("<build>") / "audience_relay-<version>-py3-none-any.whl", Path("<build>") / "ingest-<hash>.zip"
    # setuptools builds in the tree: its build/ keeps modules deleted since, which the wheel would ship.
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(build), str(ROOT)],
                           capture_output=True, text=True)
    if built.returncode:
        raise DeployError(f"python -m build failed: {(built.stdout + built.stderr)[-2000:]}")
    (wheel,) = build.glob("audience_relay-*.whl")
    window = plan.ingest.mode == "window"
    return wheel, ingest_package(build, parquet=window and plan.ingest.suffix.startswith(".parquet"), catalog=window and catalog)


def _build_lambda(plan: Deployment, build: Path, wheel: Path, stem: str = "lambda", extra: tuple[str, ...] = ()) -> Path:
    _say(f"build the {stem} Lambda zip (the library, {', '.join(LAMBDA_REQUIREMENTS + extra)} for Lambda's Linux)")
    if plan.dry_run:
        return Path("<build>") / f"{stem}-<hash>.zip"
    return lambda_package(build, wheel, stem, extra)


def lambda_package(build: Path, wheel: Path, stem: str = "lambda", extra: tuple[str, ...] = ()) -> Path:
    """The code of the library's Lambdas as `<stem>-<hash>.zip`: the library without its
    dependencies, plus LAMBDA_REQUIREMENTS and `extra` for python3.11 on x86_64 Linux. `lambda`
    serves the control plane and feedback; `catalog` (CATALOG_REQUIREMENTS) the catalog Lambda."""
    target = build / stem
    _pip_install(target, ["--no-deps", str(wheel)], f"the {stem} Lambda package")
    _pip_install(target, [*LAMBDA_PLATFORM, *LAMBDA_REQUIREMENTS, *extra], f"the {stem} Lambda package")
    return _hashed_zip(build, stem, target)


def ingest_package(build: Path, parquet: bool = False, catalog: bool = False) -> Path:
    """The ingest Lambda's code as `ingest-<hash>.zip`: INGEST_MODULES, pyarrow for Lambda's Linux
    when windows take Parquet files, and the catalog's client with psycopg when windows record there."""
    target = build / "ingest"
    for module in ("audience_relay/__init__.py",) + INGEST_MODULES + (CATALOG_CLIENT_MODULES if catalog else ()):
        placed = target / "audience_relay" / module.removeprefix("audience_relay/")   # as installed from the wheel
        placed.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / module, placed)
    requirements = [*(PARQUET_REQUIREMENTS if parquet else ()), *(CATALOG_CLIENT_REQUIREMENTS if catalog else ())]
    if requirements:
        _pip_install(target, [*LAMBDA_PLATFORM, *requirements], "the ingest package")
    return _hashed_zip(build, "ingest", target)


def _pip_install(target: Path, arguments: list[str], what: str) -> None:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--target", str(target), *arguments]
    installed = subprocess.run(command, capture_output=True, text=True)
    if installed.returncode:
        raise DeployError(f"building {what} failed: {(installed.stdout + installed.stderr)[-2000:]}")


def _hashed_zip(build: Path, stem: str, target: Path) -> Path:
    """`<stem>-<hash>.zip` of a folder, named by its content: a changed package changes the stack's
    parameter, and CloudFormation updates the function."""
    files = sorted(p for p in target.rglob("*") if p.is_file())
    content = hashlib.sha256()
    for path in files:
        if ".dist-info" not in path.parent.name:   # pip's records name the temporary wheel path
            content.update(path.relative_to(target).as_posix().encode() + path.read_bytes())
    return _zip(build / f"{stem}-{content.hexdigest()[:12]}.zip", target, [path.relative_to(target) for path in files])


def _zip(target: Path, root: Path, members: list[Path]) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for member in members:
            archive.write(root / member, member.as_posix())
    return target


def _stack(plan: Deployment, cloudformation, name: str, body: str, parameters: dict[str, str | None]) -> None:
    stack = plan.stack_name(name)
    _say(f"deploy stack {stack} ({name}) with " + " ".join(f"{k}={v}" for k, v in parameters.items() if v is not None))
    if cloudformation is None:
        return
    existing = _existing(cloudformation, stack)
    # A parameter not given keeps the stack's value, passed as it is (not UsePreviousValue: moto
    # knows previous values only of parameters given explicitly; none of ours is NoEcho). Read
    # before a failed creation is deleted: its values are the ones to create it with again.
    previous = {p["ParameterKey"]: p["ParameterValue"] for p in existing.get("Parameters", [])} if existing else {}
    if existing and existing["StackStatus"] in STUCK:
        raise DeployError(f"{stack} is {existing['StackStatus']} ({existing.get('StackStatusReason', '')}): CloudFormation takes no "
                          "update until it is resolved (continue the rollback, or delete the resources it names), then deploy again")
    if existing and existing["StackStatus"] == "ROLLBACK_COMPLETE":
        _recreate(cloudformation, stack)
        existing = None
    exists = existing is not None
    given = {k: v if v is not None else previous.get(k) for k, v in parameters.items()}
    request = {"StackName": stack, "TemplateBody": body, "Capabilities": ["CAPABILITY_NAMED_IAM"],
               "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in given.items() if v is not None]}
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


def _recreate(cloudformation, stack: str) -> None:
    """A failed creation leaves nothing to update: CloudFormation accepts only a delete. Anything
    the rollback kept (a resource with DeletionPolicy Retain) would block the next creation."""
    _say(f"{stack} is ROLLBACK_COMPLETE after a failed creation: delete it and create it again")
    stack_id = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]["StackId"]
    cloudformation.update_termination_protection(StackName=stack, EnableTerminationProtection=False)
    cloudformation.delete_stack(StackName=stack)
    cloudformation.get_waiter("stack_delete_complete").wait(StackName=stack, WaiterConfig={"Delay": 5, "MaxAttempts": 360})
    kept = [f"{e['LogicalResourceId']} ({e.get('PhysicalResourceId', '')})"
            for e in cloudformation.describe_stack_events(StackName=stack_id)["StackEvents"] if e["ResourceStatus"] == "DELETE_SKIPPED"]
    if kept:
        raise DeployError(f"{stack}: the failed creation left {', '.join(kept)}; delete them before deploying again")


def _existing(cloudformation, stack: str) -> dict | None:
    try:
        return cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    except ClientError as error:
        if "does not exist" in str(error):
            return None
        raise


def _failure(cloudformation, stack: str) -> str:
    status = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    failed = [f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', '')}"
              for e in cloudformation.describe_stack_events(StackName=stack)["StackEvents"] if e["ResourceStatus"].endswith("FAILED")]
    return f"{stack} ended {status['StackStatus']} ({status.get('StackStatusReason', '')}); failed: {'; '.join(failed[:5]) or 'none listed'}"
