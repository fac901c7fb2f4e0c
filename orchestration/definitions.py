"""Step Functions definitions (ASL, JSONata) built from the destination config.

One Standard state machine per destination runs its whole delivery lifecycle:
acquire the quota lease -> prepare (Glue job, or an on-demand EMR cluster) -> deliver (Glue
job) -> read the delivery summary -> done, or on `QUOTA_DEFERRED` release the lease, wait
until `resume_at` and deliver again. Every phase has a typed `Catch` that releases the lease,
alerts (SNS), records the failure with the execution's context (SQS dead-letter queue) and
fails with an error naming the phase. Deferrals are counted in the state; past the limit the
execution fails loudly, and every `continue_every` deferrals it continues as a new execution
to stay far from the 25,000-event history limit.

A scheduler machine fans out to the per-destination machines with a Map
(`states:startExecution.sync:2`, bounded concurrency), so one slow or failing destination
never stalls the others.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


TRANSIENT = ["States.Timeout", "Glue.AWSGlueException", "Glue.ConcurrentRunsExceededException", "States.TaskFailed"]


@dataclass(frozen=True)
class MachineSpec:
    """What a destination's machine needs to know (built by jobs/ from the config)."""

    id: str
    kind: str
    profile: str
    quota_key: str


@dataclass(frozen=True)
class Resources:
    """Names and ARNs the definitions point at; infra/ creates them per stage."""

    state_table: str = "audience-relay-state"
    prepare_job: str = "audience-relay-prepare"
    deliver_job: str = "audience-relay-deliver"
    work_bucket: str = "audience-relay-work"
    config_uri: str = "s3://audience-relay-artifacts/config/destinations.yaml"
    alert_topic_arn: str = "arn:aws:sns:us-east-1:123456789012:audience-relay-alerts"
    dead_letter_queue_url: str = "https://sqs.us-east-1.amazonaws.com/123456789012/audience-relay-failures"
    destination_machine_arn_prefix: str = "arn:aws:states:us-east-1:123456789012:stateMachine:audience-relay-destination-"
    lease_seconds: int = 4 * 3600
    max_deferrals: int = 30
    continue_every: int = 10


def _retry_transient() -> dict:
    return {"ErrorEquals": TRANSIENT, "IntervalSeconds": 30, "BackoffRate": 2.0, "MaxAttempts": 3,
            "MaxDelaySeconds": 600, "JitterStrategy": "FULL"}


def _catch(phase: str) -> list[dict]:
    return [{"ErrorEquals": ["States.ALL"], "Next": "RecordFailure",
             "Assign": {"failed_phase": phase, "failure": "{% $states.errorOutput %}"}}]


def _glue(job: str, arguments: dict, phase: str, next_state: str) -> dict:
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::glue:startJobRun.sync",
        "Arguments": {"JobName": job, "Arguments": arguments},
        "Retry": [_retry_transient()],
        "Catch": _catch(phase),
        "Next": next_state,
    }


def destination_machine(destination: MachineSpec, resources: Resources) -> dict:
    """The per-destination lifecycle; the execution input holds `run_id`, `input` and `consent`."""
    out = f"s3://{resources.work_bucket}"
    lease_key = {"pk": {"S": f"LEASE#{destination.quota_key}"}, "sk": {"S": "LEASE"}}
    now = "{% $string($floor($millis() / 1000)) %}"
    common = {"--out": out, "--run_id": "{% $run.run_id %}", "--config": resources.config_uri}
    release = {
        "Type": "Task",
        "Resource": "arn:aws:states:::dynamodb:updateItem",
        "Arguments": {
            "TableName": resources.state_table,
            "Key": lease_key,
            "UpdateExpression": "SET expires_at = :zero REMOVE #owner",
            "ConditionExpression": "#owner = :owner",
            "ExpressionAttributeNames": {"#owner": "owner"},
            "ExpressionAttributeValues": {":owner": {"S": "{% $owner %}"}, ":zero": {"N": "0"}},
        },
    }
    states = {
        "Init": {
            "Type": "Pass",
            "Assign": {
                "run": "{% $states.input %}",
                "owner": "{% $states.context.Execution.Name %}",
                "deferrals": "{% $exists($states.input.deferrals) ? $states.input.deferrals : 0 %}",
                "prepared": "{% $exists($states.input.prepared) ? $states.input.prepared : false %}",
            },
            "Next": "AcquireLease",
        },
        "AcquireLease": {
            "Type": "Task",
            "Resource": "arn:aws:states:::dynamodb:updateItem",
            "Arguments": {
                "TableName": resources.state_table,
                "Key": lease_key,
                "UpdateExpression": "SET #owner = :owner, expires_at = :expires ADD fencing_token :one",
                "ConditionExpression": "attribute_not_exists(expires_at) OR expires_at < :now OR #owner = :owner",
                "ExpressionAttributeNames": {"#owner": "owner"},
                "ExpressionAttributeValues": {
                    ":owner": {"S": "{% $owner %}"},
                    ":expires": {"N": f"{{% $string($floor($millis() / 1000) + {resources.lease_seconds}) %}}"},
                    ":now": {"N": now},
                    ":one": {"N": "1"},
                },
                "ReturnValues": "UPDATED_NEW",
            },
            "Assign": {"fencing_token": "{% $states.result.Attributes.fencing_token.N %}"},
            # Another job holds the shared quota: wait for it, with backoff and jitter.
            "Retry": [{"ErrorEquals": ["DynamoDB.ConditionalCheckFailedException"], "IntervalSeconds": 60, "BackoffRate": 1.5,
                       "MaxAttempts": 20, "MaxDelaySeconds": 900, "JitterStrategy": "FULL"}, _retry_transient()],
            "Catch": _catch("Lease"),
            "Next": "AlreadyPrepared",
        },
        "AlreadyPrepared": {
            "Type": "Choice",
            "Choices": [{"Condition": "{% $prepared %}", "Next": "Deliver"}],
            "Default": "Prepare",
        },
        "Prepare": _glue(resources.prepare_job, {
            **common, "--input": "{% $run.input %}", "--consent": "{% $run.consent %}",
        }, "Prepare", "MarkPrepared"),
        "MarkPrepared": {"Type": "Pass", "Assign": {"prepared": True}, "Next": "Deliver"},
        "Deliver": _glue(resources.deliver_job, {
            **common, "--destination": destination.id, "--state": f"dynamodb://{resources.state_table}",
            "--deferred_exit_code": "0",
            "--fence_owner": "{% $owner %}", "--fence_token": "{% $fencing_token %}",
        }, "Deliver", "ReadSummary"),
        "ReadSummary": {
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:s3:getObject",
            "Arguments": {"Bucket": resources.work_bucket, "Key": "{% 'runs/' & $run.run_id & '/delivery/summary.json' %}"},
            "Assign": {"summary": "{% $parse($states.result.Body) %}"},
            "Retry": [_retry_transient()],
            "Catch": _catch("ReadSummary"),
            "Next": "Outcome",
        },
        "Outcome": {
            "Type": "Choice",
            "Choices": [
                {"Condition": "{% $summary.status = 'SUCCEEDED' %}", "Next": "ReleaseLease"},
                {"Condition": f"{{% $summary.status = 'QUOTA_DEFERRED' and $deferrals >= {resources.max_deferrals} %}}",
                 "Next": "DeferralLimitReached"},
                {"Condition": "{% $summary.status = 'QUOTA_DEFERRED' %}", "Next": "CountDeferral"},
            ],
            "Default": "DeliveryFailed",
        },
        "ReleaseLease": {**release, "Retry": [_retry_transient()], "Catch": _catch("Release"), "Next": "Done"},
        "Done": {"Type": "Succeed"},
        "CountDeferral": {"Type": "Pass", "Assign": {"deferrals": "{% $deferrals + 1 %}"}, "Next": "ReleaseBeforeWait"},
        # Nobody should hold the shared quota while waiting for it to reset.
        "ReleaseBeforeWait": {**release, "Retry": [_retry_transient()], "Catch": _catch("Release"), "Next": "WaitForQuota"},
        "WaitForQuota": {"Type": "Wait", "Timestamp": "{% $summary.resume_at %}", "Next": "ContinueAsNew?"},
        "ContinueAsNew?": {
            "Type": "Choice",
            "Choices": [{"Condition": f"{{% $deferrals % {resources.continue_every} = 0 %}}", "Next": "ContinueAsNew"}],
            "Default": "AcquireLease",
        },
        "ContinueAsNew": {
            "Type": "Task",
            "Resource": "arn:aws:states:::states:startExecution",
            "Arguments": {
                "StateMachineArn": "{% $states.context.StateMachine.Id %}",
                "Name": "{% $run.run_id & '-' & $string($deferrals) %}",
                "Input": "{% $merge([$run, {'deferrals': $deferrals, 'prepared': $prepared}]) %}",
            },
            "Catch": _catch("ContinueAsNew"),
            "Next": "Continued",
        },
        "Continued": {"Type": "Succeed"},
        "DeferralLimitReached": {"Type": "Pass", "Assign": {"failed_phase": "DeferralLimit", "failure": "{% $summary %}"},
                                 "Next": "RecordFailure"},
        "DeliveryFailed": {"Type": "Pass", "Assign": {"failed_phase": "Delivery", "failure": "{% $summary %}"}, "Next": "RecordFailure"},
        "RecordFailure": {**release, "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Alert"}], "Next": "Alert"},
        "Alert": {
            "Type": "Task",
            "Resource": "arn:aws:states:::sns:publish",
            "Arguments": {
                "TopicArn": resources.alert_topic_arn,
                "Subject": f"audience-relay {destination.id}: delivery lifecycle failed",
                "Message": "{% $string({'destination': '" + destination.id + "', 'phase': $failed_phase, "
                           "'execution': $states.context.Execution.Id, 'run_id': $run.run_id}) %}",
            },
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "DeadLetter"}],
            "Next": "DeadLetter",
        },
        "DeadLetter": {
            "Type": "Task",
            "Resource": "arn:aws:states:::sqs:sendMessage",
            "Arguments": {
                "QueueUrl": resources.dead_letter_queue_url,
                "MessageBody": "{% $string({'destination': '" + destination.id + "', 'phase': $failed_phase, 'error': $failure, "
                               "'execution': $states.context.Execution.Id, 'input': $run, 'deferrals': $deferrals}) %}",
            },
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Failed"}],
            "Next": "Failed",
        },
        "Failed": {"Type": "Fail", "Error": "{% $failed_phase & 'Failed' %}",
                   "Cause": "{% $string($failure) %}"},
    }
    return {
        "Comment": f"audience-relay: delivery lifecycle of {destination.id} ({destination.kind}/{destination.profile})",
        "QueryLanguage": "JSONata",
        "StartAt": "Init",
        "States": states,
    }


def scheduler_machine(destinations: list[str], resources: Resources, max_concurrency: int = 10) -> dict:
    """Fan out one run to every active destination's machine; a failure stays in its branch."""
    return {
        "Comment": "audience-relay: start every active destination's lifecycle for one input",
        "QueryLanguage": "JSONata",
        "StartAt": "Destinations",
        "States": {
            "Destinations": {
                "Type": "Map",
                "Items": destinations,
                "MaxConcurrency": max_concurrency,
                "ItemSelector": {"destination": "{% $states.context.Map.Item.Value %}", "run": "{% $states.input %}"},
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"},
                    "StartAt": "RunDestination",
                    "States": {
                        "RunDestination": {
                            "Type": "Task",
                            "Resource": "arn:aws:states:::states:startExecution.sync:2",
                            "Arguments": {
                                "StateMachineArn": f"{{% '{resources.destination_machine_arn_prefix}' & $states.input.destination %}}",
                                "Name": "{% $states.input.run.run_id & '-' & $states.input.destination %}",
                                "Input": "{% $states.input.run %}",
                            },
                            # One destination's failure is reported, not allowed to stop the others.
                            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "DestinationFailed",
                                       "Output": {"destination": "{% $states.input.destination %}", "error": "{% $states.errorOutput %}"}}],
                            "Output": {"destination": "{% $states.input.destination %}", "status": "SUCCEEDED"},
                            "End": True,
                        },
                        "DestinationFailed": {"Type": "Pass", "End": True},
                    },
                },
                "End": True,
            }
        },
    }


def render(destinations: list[MachineSpec], resources: Resources, out: str | Path) -> list[Path]:
    """Write one ASL JSON file per machine; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    machines = {f"destination-{d.id}": destination_machine(d, resources) for d in destinations}
    machines["scheduler"] = scheduler_machine([d.id for d in destinations], resources)
    for name, definition in machines.items():
        path = out / f"{name}.asl.json"
        path.write_text(json.dumps(definition, indent=2) + "\n")
        written.append(path)
    return written
