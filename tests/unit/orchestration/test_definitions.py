"""The rendered definitions: well-formed ASL, typed Catch per phase, and cfn-lint clean."""
import json

import pytest
from cfnlint.api import ManualArgs, lint

from audience_relay.cli.main import main
from audience_relay.orchestration.machines.destination import destination_machine
from audience_relay.orchestration.machines.feedback import feedback_machine
from audience_relay.orchestration.machines.scheduler import scheduler_machine
from audience_relay.orchestration.machines.specs import MachineSpec, Resources

GOOGLE = MachineSpec("google_dm", "http_api", "google_data_manager", "google_ads_project")
META = MachineSpec("meta_ads", "http_api", "meta_custom_audiences", "meta_ads")
ON_EMR = MachineSpec("partner_sftp", "sftp", "sftp_gzip_csv", "partner_sftp", prepare_engine="emr", transform_job="enrich")


def targets(state: dict) -> list[str]:
    found = [state.get("Next"), state.get("Default")]
    found += [c["Next"] for c in state.get("Choices", [])] + [c["Next"] for c in state.get("Catch", [])]
    return [t for t in found if t]


@pytest.mark.parametrize("machine", [destination_machine(GOOGLE, Resources()), destination_machine(ON_EMR, Resources()),
                                     destination_machine(None, Resources()), feedback_machine(Resources())],
                         ids=["glue", "emr", "registered", "feedback"])
def test_every_transition_lands_on_a_state_and_every_state_is_reachable(machine):
    states = machine["States"]
    seen, todo = set(), [machine["StartAt"]]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        assert name in states, f"transition to missing state {name}"
        seen.add(name)
        todo.extend(targets(states[name]))
    assert seen == set(states)


def test_each_phase_is_retried_with_jitter_and_caught_by_name():
    states = destination_machine(GOOGLE, Resources())["States"]
    for phase in ("Prepare", "Deliver", "ReadSummary"):
        if phase != "Deliver":  # Deliver is retried through AcquireLease, under a new fencing token
            assert states[phase]["Retry"][0]["JitterStrategy"] == "FULL" and states[phase]["Retry"][0]["MaxDelaySeconds"]
        assert states[phase]["Catch"][0]["Assign"]["failed_phase"] == phase
    assert "Retry" not in states["Deliver"] and [c["Next"] for c in states["Deliver"]["Catch"]] == ["DeliverAgain?"]
    assert states["WaitBeforeDeliverAgain"]["Next"] == "AcquireLease"
    assert states["Prepare"]["Resource"] == states["Deliver"]["Resource"] == "arn:aws:states:::glue:startJobRun.sync"
    assert states["Failed"]["Error"] == "{% $failed_phase & 'Failed' %}"
    assert states["AcquireLease"]["Arguments"]["Key"]["pk"]["S"] == "{% 'LEASE#' & $quota_key %}"
    # The lease is the shared quota's, not the destination's; the registry's key (in the input) wins.
    assert states["Init"]["Assign"]["quota_key"] == "{% $exists($states.input.quota_key) ? $states.input.quota_key : 'google_ads_project' %}"
    assert states["Init"]["Assign"]["destination_id"] == "google_dm"


def test_the_registered_destinations_machine_takes_the_destination_from_its_input_and_prepares_on_glue():
    machine = destination_machine(None, Resources())
    states = machine["States"]
    assert states["Init"]["Assign"]["destination_id"] == "{% $states.input.destination %}"
    assert states["AlreadyPrepared"]["Default"] == "Prepare" and states["Prepare"]["Next"] == "MarkPrepared"
    assert states["Prepare"]["Arguments"]["Arguments"]["--destinations"] == "{% $destination_id %}"
    assert states["Deliver"]["Arguments"]["Arguments"]["--destination"] == "{% $destination_id %}"
    assert "$destination_id" in states["ReadSummary"]["Arguments"]["Key"] and "google" not in json.dumps(machine)


def test_deferral_loop_is_bounded_and_continues_as_a_new_execution():
    resources = Resources(max_deferrals=5, continue_every=2)
    states = destination_machine(GOOGLE, resources)["States"]
    limit = states["Outcome"]["Choices"][1]
    assert "$deferrals >= 5" in limit["Condition"] and limit["Next"] == "DeferralLimitReached"
    assert "$deferrals % 2 = 0" in states["ContinueAsNew?"]["Choices"][0]["Condition"]
    assert states["WaitForQuota"]["Timestamp"] == "{% $summary.resume_at %}"


def test_scheduler_fans_out_with_bounded_concurrency_and_isolates_failures():
    machine = scheduler_machine([META, GOOGLE], Resources(), max_concurrency=3)
    fan_out = machine["States"]["Destinations"]
    assert fan_out["MaxConcurrency"] == 3 and fan_out["Items"] == "{% $destinations %}"
    assert machine["States"]["Init"]["Assign"]["destinations"] == [   # no registry: the rendered list
        {"destination": "meta_ads", "quota_key": "meta_ads"}, {"destination": "google_dm", "quota_key": "google_ads_project"}]
    assert "ListDestinations" not in machine["States"]
    processor = fan_out["ItemProcessor"]["States"]
    task = processor["RunDestination"]
    assert task["Resource"] == processor["RunRegistered"]["Resource"] == "arn:aws:states:::states:startExecution.sync:2"
    # A destination registered after the deploy has no machine yet: it runs on the registered destinations' machine.
    assert task["Catch"][0] == {"ErrorEquals": ["StepFunctions.StateMachineDoesNotExistException"], "Next": "RunRegistered",
                                "Output": "{% $states.input %}"}
    assert processor["RunRegistered"]["Arguments"]["StateMachineArn"].endswith(":stateMachine:audience-relay-destination-_registered")
    # A destination's execution of the run that exists already (a repeated start) is not run twice, nor a failure.
    assert task["Catch"][1]["ErrorEquals"] == processor["RunRegistered"]["Catch"][0]["ErrorEquals"] == [
        "StepFunctions.ExecutionAlreadyExistsException"]
    assert task["Catch"][1]["Next"] == "DestinationDone" and task["Catch"][1]["Output"]["status"] == "DUPLICATE"
    assert task["Catch"][2]["Next"] == processor["RunRegistered"]["Catch"][1]["Next"] == "DestinationFailed"


def test_emr_prepare_terminates_its_cluster_on_success_and_on_failure():
    states = destination_machine(ON_EMR, Resources())["States"]
    assert states["AlreadyPrepared"]["Default"] == "CreateCluster"
    assert states["CreateCluster"]["Resource"].endswith("elasticmapreduce:createCluster.sync")
    assert states["Prepare"]["Resource"].endswith("elasticmapreduce:addStep.sync")
    assert states["Prepare"]["Next"] == "TerminateCluster" and states["Prepare"]["Catch"][0]["Next"] == "TerminateClusterAfterFailure"
    assert states["TerminateClusterAfterFailure"]["Next"] == "RecordFailure"
    assert states["TerminateCluster"]["Next"] == "Transform" and states["Transform"]["Arguments"]["JobName"] == "enrich"


def test_scheduler_prepares_once_before_fanning_out_prepared_runs():
    states = scheduler_machine([GOOGLE], Resources())["States"]
    assert states["Prepare"]["Next"] == "Destinations" and "--destinations" not in states["Prepare"]["Arguments"]["Arguments"]
    assert "'prepared': true" in states["Destinations"]["ItemSelector"]["run"]
    assert states["AllDelivered?"]["Choices"][0]["Next"] == "SomeDestinationsFailed"


WITH_FEEDBACK = Resources(feedback_machine_arn="arn:aws:states:us-east-1:123456789012:stateMachine:audience-relay-feedback")


@pytest.mark.parametrize("machine", [destination_machine(GOOGLE, Resources()), destination_machine(ON_EMR, Resources()),
                                     destination_machine(None, Resources()), scheduler_machine([GOOGLE], WITH_FEEDBACK),
                                     feedback_machine(Resources())],
                         ids=["glue", "emr", "registered", "scheduler", "feedback"])
def test_definitions_pass_cfn_lint(machine):
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {"Machine": {"Type": "AWS::StepFunctions::StateMachine", "Properties": {
            "Definition": machine, "RoleArn": "arn:aws:iam::123456789012:role/audience-relay-states"}}},
    }
    problems = [m for m in lint(json.dumps(template), config=ManualArgs(regions=["us-east-1"])) if m.rule.id.startswith("E")]
    assert problems == [], [str(p) for p in problems]


def test_definitions_command_renders_one_machine_per_active_destination(tmp_path, capsys):
    assert main(["definitions", "--out", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["destination-_registered.asl.json", "destination-google_dm.asl.json", "destination-meta_ads.asl.json",
                     "destination-partner_sftp.asl.json", "feedback.asl.json", "scheduler.asl.json"]
    assert json.loads((tmp_path / "scheduler.asl.json").read_text())["QueryLanguage"] == "JSONata"


def test_feedback_asks_destinations_in_express_children_of_a_distributed_map_then_consolidates_on_glue():
    states = feedback_machine(Resources(feedback_concurrency=4))["States"]
    ask = states["AskDestinations"]
    assert ask["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"}
    assert ask["MaxConcurrency"] == 4 and ask["Next"] == "Consolidate"
    child = ask["ItemProcessor"]["States"]["Ask"]
    assert child["Resource"] == "arn:aws:states:::lambda:invoke" and child["Catch"][0]["Next"] == "Unanswered"   # an answer either way
    assert child["Retry"][0]["ErrorEquals"][-1] == "Lambda.TooManyRequestsException"
    # An Express child lives 5 minutes at most: two bounded attempts fit, and a child failing past it is tolerated.
    assert child["TimeoutSeconds"] * (1 + child["Retry"][0]["MaxAttempts"]) + 10 < 300 and ask["ToleratedFailurePercentage"] == 100
    assert states["Consolidate"]["Arguments"]["Arguments"]["--ask"] == "none"   # the Map asked; Glue only consolidates
    assert states["AllAnswered?"]["Choices"][0]["Next"] == "SomeUnanswered"


def test_the_scheduler_starts_feedback_after_delivering_everywhere_without_waiting_for_it():
    assert "StartFeedback" not in scheduler_machine([GOOGLE], Resources())["States"]   # locally: no feedback machine
    states = scheduler_machine([GOOGLE], WITH_FEEDBACK)["States"]
    assert states["AllDelivered?"]["Default"] == "StartFeedback" and states["StartFeedback"]["Next"] == "Done"
    start = states["StartFeedback"]
    assert start["Resource"] == "arn:aws:states:::states:startExecution"   # not .sync: it waits hours for the counts
    assert start["Arguments"]["Input"]["wait_seconds"] == WITH_FEEDBACK.feedback_delay_seconds
    # A repeated start of the same run (a schedule started twice) is not a failure: its feedback runs once.
    assert start["Catch"][0] == {"ErrorEquals": ["StepFunctions.ExecutionAlreadyExistsException"], "Next": "Done"}
    assert start["Retry"][0] == {"ErrorEquals": ["StepFunctions.ExecutionAlreadyExistsException"], "MaxAttempts": 0}   # not retried
