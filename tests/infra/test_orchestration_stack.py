"""The rendered orchestration stack: lint-clean, least privilege, every placeholder filled in."""
import json
import re
from pathlib import Path

import pytest

from jobs.cli import main
from tests.infra.policy import cfn_lint, load, problems

PLACEHOLDER = re.compile(r"\$\{([A-Za-z]+)\}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("stack") / "orchestration.json"
    assert main(["definitions", "--stack", str(path)]) == 0
    return path


def machines(template: dict) -> dict:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == "AWS::StepFunctions::StateMachine"}


def test_cfn_lint_and_the_project_rules_pass(stack):
    assert cfn_lint(stack) == ""
    assert problems(load(stack)) == []


def test_one_machine_per_destination_and_the_scheduler_each_logged_traced_and_alarmed(stack):
    template = json.loads(stack.read_text())
    found = machines(template)
    names = {r["Properties"]["StateMachineName"]["Fn::Sub"] for r in found.values()}
    assert names == {f"audience-relay-${{Stage}}-{n}" for n in
                     ("scheduler", "destination-meta_ads", "destination-google_dm", "destination-partner_sftp")}
    alarmed = {a["Properties"]["Dimensions"][0]["Value"]["Ref"] for a in template["Resources"].values() if a["Type"] == "AWS::CloudWatch::Alarm"}
    for logical_id, machine in found.items():
        properties = machine["Properties"]
        assert properties["LoggingConfiguration"]["Level"] == "ALL" and properties["TracingConfiguration"] == {"Enabled": True}
        assert logical_id in alarmed


def test_every_placeholder_in_a_definition_is_substituted_from_another_stack(stack):
    for machine in machines(json.loads(stack.read_text())).values():
        properties = machine["Properties"]
        used = set(PLACEHOLDER.findall(properties["DefinitionString"]))
        assert used and used == set(properties["DefinitionSubstitutions"]), used ^ set(properties["DefinitionSubstitutions"])
        definition = json.loads(properties["DefinitionString"])
        assert definition["QueryLanguage"] == "JSONata"


def test_the_command_needs_somewhere_to_write(capsys):
    assert main(["definitions"]) == 2
    assert "--out DIR, --stack FILE" in capsys.readouterr().err


def test_the_ingest_lambda_consumes_the_ingest_queue_and_may_start_only_the_scheduler(stack):
    resources = json.loads(stack.read_text())["Resources"]
    function = resources["IngestFunction"]["Properties"]
    assert function["Handler"] == "orchestration.ingest.handler"
    assert set(function["Environment"]["Variables"]) == {"SCHEDULER_ARN", "CONSENT_URI"}
    source = resources["IngestEventSource"]["Properties"]
    assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert source["EventSourceArn"] == {"Fn::ImportValue": {"Fn::Sub": "audience-relay-${Stage}-IngestQueueArn"}}
    statements = {s["Sid"]: s for s in resources["IngestRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]}
    assert statements["StartScheduler"]["Resource"] == [{"Ref": "SchedulerMachine"}]


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
    # the embedded config: google_dm reads Secrets Manager, meta_ads and partner_sftp environment variables
    assert {r["Properties"]["Name"]["Fn::Sub"] for r in secrets.values()} == {"audience-relay/${Stage}/google_dm"}
    (secret,) = secrets.values()
    assert secret["DeletionPolicy"] == "Retain" and secret["Properties"]["KmsKeyId"]
