"""The feedback machine: ask every reporting destination what it holds of a run, then consolidate."""
from __future__ import annotations

from audience_relay.orchestration.machines.specs import Resources
from audience_relay.orchestration.machines.states import LAMBDA_TRANSIENT, catch, failure_tail, failure_targets, glue_task


# An Express execution lives at most 5 minutes: the feedback Lambda's timeout (120 s, the
# orchestration stack) twice, and a retry's wait, fit in it.
FEEDBACK_LAMBDA_SECONDS = 120


def _invoke_feedback(resources: Resources, payload: dict) -> dict:
    return {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
            "Arguments": {"FunctionName": resources.feedback_function, "Payload": payload},
            "TimeoutSeconds": FEEDBACK_LAMBDA_SECONDS + 10,
            # Lambda's own transient errors answer at once; a slow report is not asked twice.
            "Retry": [{"ErrorEquals": LAMBDA_TRANSIENT, "IntervalSeconds": 2, "BackoffRate": 2.0, "MaxAttempts": 1,
                       "JitterStrategy": "FULL"}]}


def feedback_machine(resources: Resources) -> dict:
    """Ask every reporting destination what it holds of a run, at once, then consolidate.

    Input: `run_id` and optional `wait_seconds` (the platforms count uploads hours later). A
    Distributed Map runs one Express child per destination (the report calls are short and
    bursty: Express is billed by duration, not by state transition); each child's Lambda reads
    every report page and writes the destination's part to S3, and a failure stays that
    destination's answer (a child that fails past Express's 5 minutes is tolerated, unanswered).
    The Glue job `feedback` (`--ask none`) consolidates the parts into the feedback table; the machine then fails as `FeedbackFailed` naming the destinations that did
    not answer, with an alert and a dead letter, their parts missing, the others' kept.
    """
    run_id = "{% $run.run_id %}"
    return {
        "Comment": "audience-relay: delivery feedback of a run (what each destination reports holding), consolidated by Glue",
        "QueryLanguage": "JSONata",
        "StartAt": "Init",
        "States": {
            "Init": {"Type": "Pass", "Assign": {
                "run": "{% $states.input %}",
                **failure_targets(resources),
            }, "Next": "WaitForCounts"},
            "WaitForCounts": {"Type": "Wait",
                              "Seconds": "{% $exists($states.input.wait_seconds) ? $states.input.wait_seconds : 0 %}",
                              "Next": "ListDestinations"},
            "ListDestinations": {**_invoke_feedback(resources, {"action": "list", "run_id": run_id}),
                                 "Assign": {"destinations": "{% [$states.result.Payload.destinations] %}"},
                                 "Catch": catch("ListDestinations"), "Next": "AnyToAsk?"},
            "AnyToAsk?": {"Type": "Choice", "Choices": [{"Condition": "{% $count($destinations) = 0 %}", "Next": "Done"}],
                          "Default": "AskDestinations"},
            "AskDestinations": {
                "Type": "Map",
                "Items": "{% $destinations %}",
                "MaxConcurrency": resources.feedback_concurrency,
                "ItemSelector": {"run_id": run_id, "destination": "{% $states.context.Map.Item.Value %}"},
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"},
                    "StartAt": "Ask",
                    "States": {
                        "Ask": {**_invoke_feedback(resources, {"action": "ask", "run_id": "{% $states.input.run_id %}",
                                                               "destination": "{% $states.input.destination %}"}),
                                "Output": "{% $states.result.Payload %}",
                                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Unanswered",
                                           "Output": {"destination": "{% $states.input.destination %}",
                                                      "error": "{% $states.errorOutput %}"}}],
                                "End": True},
                        "Unanswered": {"Type": "Pass", "End": True},
                    },
                },
                "Label": "AskDestinations",
                # A child that fails anyway (past Express's 5 minutes) leaves its item without an
                # answer; the others are still consolidated.
                "ToleratedFailurePercentage": 100.0,   # a float: moto's grammar reads an integer here as no number
                "Assign": {"answers": "{% $states.result %}"},
                "Catch": catch("AskDestinations"),
                "Next": "Consolidate",
            },
            "Consolidate": glue_task(resources.feedback_job, {
                "--out": f"s3://{resources.work_bucket}", "--run": run_id, "--config": resources.config_uri, "--ask": "none",
            }, "Consolidate", "AllAnswered?", resources.job_timeout_seconds),
            "AllAnswered?": {
                "Type": "Choice",
                "Choices": [{"Condition": "{% $count($answers[$exists(audiences)]) < $count($destinations) %}", "Next": "SomeUnanswered"}],
                "Default": "Done",
            },
            "Done": {"Type": "Succeed", "Output": {"run_id": run_id, "answers": "{% $exists($answers) ? $answers : [] %}"}},
            # Who did not answer, and what the failed children said (a caught error, or a child's own failure).
            "SomeUnanswered": {"Type": "Pass", "Assign": {"failed_phase": "Feedback", "failure": (
                "{% {'unanswered': [$filter($destinations, function($d) { $not($d in $answers[$exists(audiences)].destination) })], "
                "'errors': [$answers[$not($exists(audiences))]]} %}")}, "Next": "RecordFailure"},
            **failure_tail("audience-relay: delivery feedback incomplete", None, "'run_id': $run.run_id"),
        },
    }

