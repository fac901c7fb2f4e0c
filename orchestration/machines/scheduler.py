"""The scheduler machine: prepare one input once for every destination, fan out to their machines,
record the run in the catalog and start the feedback machine."""
from __future__ import annotations

import json

from audience_relay.orchestration.machines.specs import REGISTERED, MachineSpec, Resources
from audience_relay.orchestration.machines.states import LAMBDA_TRANSIENT, alert_and_dead_letter, catch, failure_tail, failure_targets, glue_task, retry_transient


# The EventBridge schedule starts the scheduler with its `scheduled_time` (RFC 3339, UTC) in place
# of a run id: the run id is `daily-YYYYMMDDHHMM` and `{date}` in the input is the scheduled
# day (`s3://lake/segments/dt={date}/`), so each scheduled day reads its own folder and a
# repeated start of the same schedule time shares the run id (prepare skips, the ledger dedups).
SCHEDULED_RUN = (
    "{% $exists($states.input.scheduled_time) ? {"
    "'run_id': 'daily-' & $replace($replace($replace($substring($states.input.scheduled_time, 0, 16), '-', ''), ':', ''), 'T', ''), "
    "'input': $replace($states.input.input, '{date}', $substring($states.input.scheduled_time, 0, 10)), "
    "'consent': $states.input.consent} : $states.input %}"
)


def _registered_destinations(resources: Resources) -> dict[str, dict]:
    """The fan-out's list read at run time: the registry's active destinations, page after page."""
    scan = {"TableName": resources.registry_table, "ConsistentRead": True, "ProjectionExpression": "destination_id, quota_key",
            "FilterExpression": "active = :active", "ExpressionAttributeValues": {":active": {"BOOL": True}},
            **({"Limit": resources.registry_page_size} if resources.registry_page_size else {})}
    return {
        "ListDestinations": {
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:dynamodb:scan",
            "Arguments": "{% $merge([" + json.dumps(scan) + ", $registry_page ? {'ExclusiveStartKey': $registry_page} : {}]) %}",
            # `[...]`: one item would otherwise be an object, none undefined. An item written before
            # the registry kept quota keys has none: its machine's own applies.
            "Assign": {"destinations": "{% $append($destinations, [$states.result.Items.{'destination': destination_id.S, "
                                       "'quota_key': quota_key.S}]) %}",
                       "registry_page": "{% $exists($states.result.LastEvaluatedKey) ? $states.result.LastEvaluatedKey : null %}"},
            "Retry": [retry_transient()],
            "Catch": catch("ListDestinations"),
            "Next": "MoreDestinations?",
        },
        "MoreDestinations?": {
            "Type": "Choice",
            "Choices": [{"Condition": "{% $registry_page != null %}", "Next": "ListDestinations"}],
            "Default": "Prepare",
        },
    }


def _run_destination(machine_arn: str, catch_missing_machine: bool) -> dict:
    """One destination's lifecycle, started and waited for; its failure is reported, not raised."""
    missing = [{"ErrorEquals": ["StepFunctions.StateMachineDoesNotExistException"], "Next": "RunRegistered",
                "Output": "{% $states.input %}"}] if catch_missing_machine else []
    # The run was started before (a repeated schedule start shares the run id): that execution
    # delivers it, or did; this one does not run it twice.
    duplicate = [{"ErrorEquals": ["StepFunctions.ExecutionAlreadyExistsException"], "Next": "DestinationDone",
                  "Output": {"destination": "{% $states.input.destination %}", "status": "DUPLICATE"}}]
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::states:startExecution.sync:2",
        "Arguments": {
            "StateMachineArn": machine_arn,
            # A continuation (after `continue_every` deferrals) gets its own name.
            "Name": "{% $states.input.run.run_id & '-' & $states.input.destination & "
                    "($exists($states.input.run.deferrals) and $states.input.run.deferrals > 0 "
                    "? '-' & $string($states.input.run.deferrals) : '') %}",
            "Input": "{% $states.input.run %}",
        },
        # One destination's failure is reported, not allowed to stop the others.
        "Catch": [*missing, *duplicate, {"ErrorEquals": ["States.ALL"], "Next": "DestinationFailed",
                             "Output": {"destination": "{% $states.input.destination %}", "status": "FAILED",
                                        "error": "{% $states.errorOutput %}"}}],
        "Output": {"destination": "{% $states.input.destination %}",
                   "status": "{% $states.result.Output.status = 'CONTINUE' ? 'CONTINUE' : 'SUCCEEDED' %}",
                   "run": "{% $exists($states.result.Output.continue_with) ? $states.result.Output.continue_with : null %}",
                   "result": "{% $states.result.Output %}"},
        "Next": "Continue?",
    }


def scheduler_machine(destinations: list[MachineSpec], resources: Resources, max_concurrency: int = 10) -> dict:
    """Prepare one input once, then run every active destination's lifecycle; a failure stays in its branch.

    With a registry table the destinations are the registry's active ones at run time (the
    control plane registers and pauses them); without, the rendered list. A destination runs on
    its own machine, or on REGISTERED_MACHINE when it was registered after the last deploy.
    """
    listing = _registered_destinations(resources) if resources.registry_table else {}
    rendered = [{"destination": d.id, "quota_key": d.quota_key} for d in destinations]
    return {
        "Comment": "audience-relay: prepare one input for every active destination, then deliver to each",
        "QueryLanguage": "JSONata",
        "StartAt": "Init",
        "States": {
            "Init": {"Type": "Pass", "Assign": {
                "run": SCHEDULED_RUN,
                **failure_targets(resources),
                "destinations": [] if listing else rendered,
                **({"registry_page": None} if listing else {}),
            }, "Next": "ListDestinations" if listing else "Prepare"},
            **listing,
            "Prepare": glue_task(resources.prepare_job, {
                "--out": f"s3://{resources.work_bucket}", "--run_id": "{% $run.run_id %}", "--config": resources.config_uri,
                "--input": "{% $run.input %}", "--consent": "{% $run.consent %}", "--if_prepared": "skip",
            }, "Prepare", "Destinations", resources.job_timeout_seconds),
            "Destinations": {
                "Type": "Map",
                "Items": "{% $destinations %}",
                "MaxConcurrency": max_concurrency,
                # The run carries the destination and its quota key: REGISTERED_MACHINE needs them.
                "ItemSelector": {"destination": "{% $states.context.Map.Item.Value.destination %}",
                                 "run": "{% $merge([$run, $states.context.Map.Item.Value, {'prepared': true, 'via_scheduler': true}]) %}"},
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"},
                    "StartAt": "RunDestination",
                    "States": {
                        "RunDestination": _run_destination(
                            f"{{% '{resources.destination_machine_arn_prefix}' & $states.input.destination %}}", True),
                        "RunRegistered": _run_destination(
                            resources.destination_machine_arn_prefix + REGISTERED, False),
                        "Continue?": {
                            "Type": "Choice",
                            "Choices": [{"Condition": "{% $states.input.status = 'CONTINUE' %}", "Next": "RunDestination"}],
                            "Default": "DestinationDone",
                        },
                        "DestinationDone": {"Type": "Pass", "End": True},
                        "DestinationFailed": {"Type": "Pass", "End": True},
                    },
                },
                "Assign": {"results": "{% $states.result %}"},
                "Catch": catch("Destinations"),
                "Next": "RecordInCatalog" if resources.catalog_function else "AllDelivered?",
            },
            **(_record_in_catalog(resources.catalog_function, "AllDelivered?") if resources.catalog_function else {}),
            "AllDelivered?": {
                "Type": "Choice",
                "Choices": [{"Condition": "{% $count($results[status = 'FAILED']) > 0 %}", "Next": "SomeDestinationsFailed"}],
                "Default": "StartFeedback" if resources.feedback_machine_arn else "Done",
            },
            **({"StartFeedback": {
                # Not waited for: the feedback machine waits hours for the platforms' counts. A
                # start that fails is alerted and dead-lettered; the delivery stands.
                "Type": "Task",
                "Resource": "arn:aws:states:::states:startExecution",
                "Arguments": {"StateMachineArn": resources.feedback_machine_arn, "Name": "{% $run.run_id %}",
                              "Input": {"run_id": "{% $run.run_id %}", "wait_seconds": resources.feedback_delay_seconds}},
                # A repeated start of the run (same run id) finds its feedback started already: not
                # retried (States.TaskFailed in TRANSIENT would match it), not a failure.
                "Retry": [{"ErrorEquals": ["StepFunctions.ExecutionAlreadyExistsException"], "MaxAttempts": 0}, retry_transient()],
                "Catch": [{"ErrorEquals": ["StepFunctions.ExecutionAlreadyExistsException"], "Next": "Done"},
                          *catch("StartFeedback")],
                "Next": "Done",
            }} if resources.feedback_machine_arn else {}),
            "Done": {"Type": "Succeed", "Output": {"run_id": "{% $run.run_id %}", "destinations": "{% $results %}"}},
            # `[...]`: a JSONata filter matching one item yields the item itself; the dead letter
            # always carries a list of failed destinations.
            "SomeDestinationsFailed": {"Type": "Pass", "Assign": {
                "failed_phase": "Destinations", "failure": "{% [$results[status = 'FAILED']] %}"}, "Next": "RecordFailure"},
            **failure_tail("audience-relay: scheduled run failed", None, "'run_id': $run.run_id"),
        },
    }



# The catalog Lambda's timeout (the orchestration stack): room for the connect timeout
# (connectors/catalog/postgres.py, 30 s: a paused Aurora cluster resumes in about 15 s) and the write.
CATALOG_LAMBDA_SECONDS = 60
# A function in a VPC may be inactive after idle days (its network interfaces reclaimed) or
# throttled while Lambda creates them: both pass.
VPC_LAMBDA_TRANSIENT = ["Lambda.ResourceNotReadyException", "Lambda.EC2ThrottledException"]


def _record_in_catalog(function: str, next_state: str) -> dict:
    """The run's accounting into the run catalog, whatever the destinations' outcome: a failed
    run is history too. The catalog being down is alerted and dead-lettered (`audience-relay
    catalog record` redoes it); the run's own outcome stands."""
    return {
        "RecordInCatalog": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Arguments": {"FunctionName": function, "Payload": {"action": "record", "run_id": "{% $run.run_id %}"}},
            "TimeoutSeconds": CATALOG_LAMBDA_SECONDS + 10,
            "Retry": [{"ErrorEquals": [*LAMBDA_TRANSIENT, *VPC_LAMBDA_TRANSIENT, "CatalogError"], "IntervalSeconds": 20, "BackoffRate": 2.0,
                       "MaxAttempts": 3, "JitterStrategy": "FULL"}],
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "CatalogAlert",
                       "Assign": {"failed_phase": "CatalogRecord", "failure": "{% $states.errorOutput %}"}}],
            "Next": next_state,
        },
        **alert_and_dead_letter("Catalog", "audience-relay: run not recorded in the run catalog", "'run_id': $run.run_id",
                                 next_state),
    }

