"""The rendered orchestration stack: lint-clean, least privilege, every placeholder filled in."""
import json
import re
from pathlib import Path

import pytest
import yaml

from audience_relay.cli.main import main
from audience_relay.pipeline.config import DEFAULT_CONFIG
from tests.infra.policy import cfn_lint, load, problems

PLACEHOLDER = re.compile(r"\$\{([A-Za-z]+)\}")
TEMPLATES = Path(__file__).resolve().parents[2] / "infra" / "templates"


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("stack") / "orchestration.json"
    assert main(["definitions", "--stack", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def emr_stack(tmp_path_factory) -> Path:
    """The embedded config with partner_sftp prepared on an on-demand EMR cluster."""
    folder = tmp_path_factory.mktemp("emr")
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    (partner,) = [d for d in config["destinations"] if d["id"] == "partner_sftp"]
    partner["orchestration"] = {"prepare_engine": "emr"}
    (folder / "destinations.yaml").write_text(yaml.safe_dump(config))
    assert main(["definitions", "--config", str(folder / "destinations.yaml"), "--stack", str(folder / "orchestration.json")]) == 0
    return folder / "orchestration.json"


@pytest.fixture(scope="module")
def window_stack(tmp_path_factory) -> Path:
    """The embedded config ingesting windows of Parquet files (adds only, no row count band)."""
    folder = tmp_path_factory.mktemp("window")
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["ingest"] = {"mode": "window", "suffix": ".parquet", "window_files": 250, "window_seconds": 45,
                        "quarantine_prefix": "rejected-files/"}
    config["quality"] = {"row_count_band": None}
    for destination in config["destinations"]:
        destination["sync_mode"] = "upsert"
    (folder / "destinations.yaml").write_text(yaml.safe_dump(config))
    assert main(["definitions", "--config", str(folder / "destinations.yaml"), "--stack", str(folder / "orchestration.json")]) == 0
    return folder / "orchestration.json"


@pytest.fixture(scope="module")
def catalog_stack(window_stack) -> Path:
    """The window config's stack for a stage with the run catalog."""
    path = window_stack.with_name("orchestration-catalog.json")
    assert main(["definitions", "--config", str(window_stack.with_name("destinations.yaml")), "--with-catalog", "--stack", str(path)]) == 0
    return path


def _imports(value) -> set[str]:
    if isinstance(value, dict):
        if "Fn::ImportValue" in value:
            return {value["Fn::ImportValue"]["Fn::Sub"]}
        return set().union(*map(_imports, value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*map(_imports, value)) if value else set()
    return set()


def _exports() -> set[str]:
    names = set()
    for template in TEMPLATES.glob("*.yaml"):
        for output in load(template).get("Outputs", {}).values():
            if "Export" in output:
                names.add(output["Export"]["Name"]["Fn::Sub"])
    return names


def machines(template: dict) -> dict:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == "AWS::StepFunctions::StateMachine"}


def test_cfn_lint_and_the_project_rules_pass(stack, emr_stack, window_stack, catalog_stack):
    for rendered in (stack, emr_stack, window_stack, catalog_stack):
        assert cfn_lint(rendered) == ""
        assert problems(load(rendered)) == []


def test_one_machine_per_destination_the_scheduler_and_feedback_each_logged_traced_and_alarmed(stack):
    template = json.loads(stack.read_text())
    found = machines(template)
    names = {r["Properties"]["StateMachineName"]["Fn::Sub"] for r in found.values()}
    paused = ("tiktok_ads", "snap_ads", "linkedin_ads", "x_ads", "pinterest_ads")   # the example's paused ad platforms have theirs too
    assert names == {f"audience-relay-${{Stage}}-{n}" for n in
                     ("scheduler", "feedback", "destination-meta_ads", "destination-google_dm", "destination-partner_sftp",
                      "destination-_registered", *(f"destination-{d}" for d in paused))}
    assert "RegisteredDestinationsMachine" in found   # not `DestinationRegisteredMachine`: a destination `registered` has that
    alarmed = {a["Properties"]["Dimensions"][0]["Value"]["Ref"] for a in template["Resources"].values() if a["Type"] == "AWS::CloudWatch::Alarm"}
    for logical_id, machine in found.items():
        properties = machine["Properties"]
        assert properties["LoggingConfiguration"]["Level"] == "ALL" and properties["TracingConfiguration"] == {"Enabled": True}
        assert logical_id in alarmed


def test_every_import_is_exported_by_a_base_stack_and_every_placeholder_is_substituted(stack, emr_stack, window_stack,
                                                                                       catalog_stack):
    exported = _exports()
    for rendered in (stack, emr_stack, window_stack, catalog_stack):
        template = json.loads(rendered.read_text())
        imported = _imports(template["Resources"])
        assert imported and imported <= exported, imported - exported
        for machine in machines(template).values():
            properties = machine["Properties"]
            assert set(PLACEHOLDER.findall(properties["DefinitionString"])) == set(properties["DefinitionSubstitutions"])


def test_on_emr_the_wheel_is_a_parameter_and_the_role_drives_only_its_stages_clusters(emr_stack):
    template = json.loads(emr_stack.read_text())
    machine = template["Resources"]["DestinationPartnerSftpMachine"]["Properties"]
    # a parameter, not an import: CloudFormation refuses to change an export in use, and each release has a new wheel
    assert machine["DefinitionSubstitutions"]["LibraryWheel"] == {"Ref": "LibraryWheel"} and "LibraryWheel" in template["Parameters"]
    cluster = json.loads(machine["DefinitionString"])["States"]["CreateCluster"]["Arguments"]
    assert cluster["Tags"] == [{"Key": "audience-relay:stage", "Value": "${Stage}"}]
    statements = {s["Sid"]: s for s in template["Resources"]["MachinesRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]}
    assert statements["RunPrepareClusters"]["Condition"] == {"StringEquals": {"aws:RequestTag/audience-relay:stage": {"Ref": "Stage"}}}
    assert statements["DriveOwnClusters"]["Condition"] == {"StringEquals": {"aws:ResourceTag/audience-relay:stage": {"Ref": "Stage"}}}


def test_the_command_needs_somewhere_to_write(capsys):
    assert main(["definitions"]) == 2
    assert "--out DIR, --stack FILE" in capsys.readouterr().err


def test_the_ingest_lambda_consumes_the_ingest_queue_and_may_start_only_the_scheduler(stack):
    resources = json.loads(stack.read_text())["Resources"]
    function = resources["IngestFunction"]["Properties"]
    assert function["Handler"] == "audience_relay.orchestration.ingest.handler"
    assert set(function["Environment"]["Variables"]) == {"SCHEDULER_ARN", "CONSENT_URI"}
    source = resources["IngestEventSource"]["Properties"]
    assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert source["EventSourceArn"] == {"Fn::ImportValue": {"Fn::Sub": "audience-relay-${Stage}-IngestQueueArn"}}
    statements = {s["Sid"]: s for s in resources["IngestRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]}
    assert statements["StartScheduler"]["Resource"] == [{"Ref": "SchedulerMachine"}]


def test_in_window_mode_one_invocation_is_one_window_and_the_role_reaches_only_what_a_window_touches(window_stack):
    resources = json.loads(window_stack.read_text())["Resources"]
    function = resources["IngestFunction"]["Properties"]
    assert function["Handler"] == "audience_relay.orchestration.ingest_window.handler" and function["Timeout"] == 150
    variables = function["Environment"]["Variables"]
    assert (variables["QUARANTINE_PREFIX"], variables["MAX_FILE_BYTES"], variables["CLAIM_STALE_SECONDS"]) == ("rejected-files/", str(1024**3), "300")
    source = resources["IngestEventSource"]["Properties"]
    assert (source["BatchSize"], source["MaximumBatchingWindowInSeconds"]) == (250, 45)
    statements = {s["Sid"]: s for s in resources["IngestRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]}
    assert statements["Quarantine"]["Action"] == ["s3:PutObject"]
    assert json.dumps(statements["Quarantine"]["Resource"]).endswith('"rejected-files/*"]]}]')
    assert json.dumps(statements["WriteRunInputs"]["Resource"]).endswith('"runs/*/input/*"]]}]')
    assert statements["ClaimFiles"]["Resource"] == [{"Fn::ImportValue": {"Fn::Sub": "audience-relay-${Stage}-StateTableArn"}}]
    assert statements["FindStartedRuns"]["Resource"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:execution:audience-relay-${Stage}-scheduler:*"}]
    # The queue's visibility timeout (set by deploy) is six times the function's.
    from audience_relay.orchestration.cloudformation import ingest_visibility_timeout
    assert ingest_visibility_timeout("window") == 6 * function["Timeout"]


def test_the_schedule_exists_only_with_an_expression_and_hands_the_scheduler_its_time(stack):
    template = json.loads(stack.read_text())
    schedule = template["Resources"]["Schedule"]
    assert schedule["Condition"] == template["Resources"]["ScheduleRole"]["Condition"] == "HasSchedule"
    assert template["Parameters"]["ScheduleExpression"]["Default"] == ""
    payload = schedule["Properties"]["Target"]["Input"]["Fn::Sub"][0]
    assert json.loads(payload.replace("${ScheduledInput}", "s3://b/dt={date}/").replace("${Bucket}/${ConsentPath}", "b/consent/")) == {
        "scheduled_time": "<aws.scheduler.scheduled-time>", "input": "s3://b/dt={date}/", "consent": "s3://b/consent/"}


def test_each_destination_with_a_secret_arn_gets_its_encrypted_secret_kept_on_delete(stack):
    secrets = {k: r for k, r in json.loads(stack.read_text())["Resources"].items() if r["Type"] == "AWS::SecretsManager::Secret"}
    # the embedded config: google_dm and the paused snap_ads, linkedin_ads, x_ads and pinterest_ads read Secrets
    # Manager; meta_ads, partner_sftp and the paused tiktok_ads environment variables
    assert {r["Properties"]["Name"]["Fn::Sub"] for r in secrets.values()} == {
        f"audience-relay/${{Stage}}/{d}" for d in ("google_dm", "snap_ads", "linkedin_ads", "x_ads", "pinterest_ads")}
    for secret in secrets.values():
        assert secret["DeletionPolicy"] == "RetainExceptOnCreate" and secret["Properties"]["KmsKeyId"]


def _statements(resources: dict, role: str) -> dict[str, dict]:
    return {s["Sid"]: s for s in resources[role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]}


def test_with_the_catalog_its_clients_run_in_its_vpc_and_the_scheduler_records_each_run(window_stack, catalog_stack):
    resources = json.loads(catalog_stack.read_text())["Resources"]
    catalog_group = {"Fn::ImportValue": {"Fn::Sub": "audience-relay-${Stage}-CatalogClientSecurityGroup"}}
    secret = [{"Fn::ImportValue": {"Fn::Sub": "audience-relay-${Stage}-CatalogSecretArn"}}]
    for function, role in (("CatalogFunction", "CatalogRole"), ("IngestFunction", "IngestRole")):
        properties = resources[function]["Properties"]
        assert properties["VpcConfig"]["SecurityGroupIds"] == [catalog_group]
        assert {"CATALOG_SECRET_ARN", "CATALOG_HOST", "CATALOG_PORT"} <= set(properties["Environment"]["Variables"])
        statements = _statements(resources, role)
        assert statements["ReadCatalogSecret"]["Resource"] == secret   # the catalog's secret only
        assert "ec2:CreateNetworkInterface" in statements["VpcNetworkInterfaces"]["Action"]
    assert resources["CatalogFunction"]["Properties"]["Handler"] == "audience_relay.lambdas.catalog.handler"
    assert set(_statements(resources, "CatalogRole")["ReadRuns"]["Action"]) == {"s3:GetObject"}   # reads runs, writes nothing in S3
    invoke = _statements(resources, "MachinesRole")["RecordInCatalog"]
    assert invoke["Resource"] == [{"Fn::Sub": "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:audience-relay-${Stage}-catalog"}]
    scheduler = json.loads(resources["SchedulerMachine"]["Properties"]["DefinitionString"])
    assert scheduler["States"]["Destinations"]["Next"] == "RecordInCatalog"
    assert scheduler["States"]["RecordInCatalog"]["Arguments"]["FunctionName"] == "${CatalogFunction}"
    # The same window config without the catalog: no catalog Lambda, nothing in a VPC, no record step.
    plain = json.loads(window_stack.read_text())
    assert "CatalogFunction" not in plain["Resources"] and "CatalogCodeKey" not in plain["Parameters"]
    assert "VpcConfig" not in json.dumps(plain) and "RecordInCatalog" not in json.dumps(plain)
