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
