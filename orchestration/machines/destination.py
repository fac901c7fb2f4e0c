"""The per-destination machine: prepare (Glue, or EMR on demand), take the quota lease, deliver,
read the summary, wait out deferrals and continue as new; every phase caught, alerted and dead-lettered."""
from __future__ import annotations

from audience_relay.connectors.state.lease import asl_acquire, asl_release
from audience_relay.orchestration.machines.specs import MachineSpec, Resources
from audience_relay.orchestration.machines.states import catch, failure_tail, failure_targets, glue_task, retry_transient


CLUSTER_STAGE_TAG = "audience-relay:stage"   # the machines' role may drive only clusters tagged with its stage


def _emr_prepare(destination: MachineSpec, resources: Resources, job_args: list[str], next_state: str) -> dict:
    """CreateCluster.sync -> AddStep.sync (spark-submit prepare) -> TerminateCluster, on every path."""
    cluster = {"ClusterId": "{% $cluster_id %}"}
    return {
        "CreateCluster": {
            "Type": "Task",
            "Resource": "arn:aws:states:::elasticmapreduce:createCluster.sync",
            "Arguments": {
                "Name": "{% 'audience-relay-' & $destination_id & '-' & $run.run_id %}",
                "ReleaseLabel": destination.emr.release,
                "Applications": [{"Name": "Spark"}],
                "ServiceRole": resources.emr_service_role,
                "JobFlowRole": resources.emr_instance_profile,
                "LogUri": resources.emr_log_uri,
                "VisibleToAllUsers": True,
                "AutoTerminationPolicy": {"IdleTimeout": destination.emr.idle_timeout_seconds},
                "Tags": [{"Key": CLUSTER_STAGE_TAG, "Value": resources.stage}],
                # Every node gets Python 3.11 and the library wheel with its dependencies (Glue 5.1's Python).
                "BootstrapActions": [{"Name": "install-audience-relay", "ScriptBootstrapAction": {
                    "Path": resources.emr_bootstrap_uri, "Args": [resources.library_wheel_uri]}}],
                "Configurations": [{"Classification": "spark-env", "Configurations": [{
                    "Classification": "export", "Properties": {"PYSPARK_PYTHON": "/usr/bin/python3.11"}}]}],
                "Instances": {
                    **({"Ec2SubnetId": destination.emr.subnet_id} if destination.emr.subnet_id else {}),
                    "KeepJobFlowAliveWhenNoSteps": True,
                    "InstanceGroups": [
                        {"Name": "primary", "InstanceRole": "MASTER", "InstanceType": destination.emr.instance_type, "InstanceCount": 1},
                        {"Name": "core", "InstanceRole": "CORE", "InstanceType": destination.emr.instance_type,
                         "InstanceCount": destination.emr.core_instances},
                    ],
                },
            },
            "Assign": {"cluster_id": "{% $states.result.ClusterId %}"},
            "TimeoutSeconds": resources.cluster_timeout_seconds,
            # No Retry: a retried createCluster could leave a second cluster behind.
            "Catch": catch("Prepare"),
            "Next": "Prepare",
        },
        "Prepare": {
            "Type": "Task",
            "Resource": "arn:aws:states:::elasticmapreduce:addStep.sync",
            "Arguments": {**cluster, "Step": {
                "Name": "prepare",
                "ActionOnFailure": "CONTINUE",
                "HadoopJarStep": {"Jar": "command-runner.jar", "Args": [
                    "spark-submit", "--deploy-mode", "cluster", resources.prepare_script_uri, *job_args]},
            }},
            "TimeoutSeconds": resources.job_timeout_seconds,
            "Catch": catch("Prepare", "TerminateClusterAfterFailure"),
            "Next": "TerminateCluster",
        },
        "TerminateCluster": {
            "Type": "Task",
            "Resource": "arn:aws:states:::elasticmapreduce:terminateCluster",
            "Arguments": cluster,
            "Retry": [retry_transient()],
            "Catch": catch("TerminateCluster"),
            "Next": next_state,
        },
        "TerminateClusterAfterFailure": {
            "Type": "Task",
            "Resource": "arn:aws:states:::elasticmapreduce:terminateCluster",
            "Arguments": cluster,
            "Retry": [retry_transient()],
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "RecordFailure"}],
            "Next": "RecordFailure",
        },
    }


def _own_prepare(destination: MachineSpec, resources: Resources, common: dict) -> dict:
    """Prepare this destination's own run (input without the scheduler), then the optional transform."""
    after_prepare = "Transform" if destination.transform_job else "MarkPrepared"
    arguments = {**common, "--input": "{% $run.input %}", "--consent": "{% $run.consent %}", "--destinations": "{% $destination_id %}",
                 "--if_prepared": "skip"}
    if destination.prepare_engine == "emr":
        states = _emr_prepare(destination, resources, [item for pair in arguments.items() for item in pair], after_prepare)
        first = "CreateCluster"
    else:
        states = {"Prepare": glue_task(resources.prepare_job, arguments, "Prepare", after_prepare, resources.job_timeout_seconds)}
        first = "Prepare"
    if destination.transform_job:
        states["Transform"] = glue_task(destination.transform_job, {**common, "--destination": "{% $destination_id %}"}, "Transform", "MarkPrepared",
                                    resources.job_timeout_seconds)
    states["MarkPrepared"] = {"Type": "Pass", "Assign": {"prepared": True}, "Next": "AcquireLease"}
    return {"AlreadyPrepared": {
        "Type": "Choice",
        "Choices": [{"Condition": "{% $prepared %}", "Next": "AcquireLease"}],
        "Default": first,
    }, **states}


# The machine of registered destinations without their own: prepares on Glue, no transform job.
_REGISTERED_SHAPE = MachineSpec(id="", kind="any", profile="any", quota_key="")


def _identity(destination: MachineSpec | None) -> dict:
    """Init's `destination_id` and `quota_key`: the machine's own, or the input's (`destination`,
    `quota_key`); a quota key in the input wins, as the registry holds it now."""
    if destination is None:
        return {"destination_id": "{% $states.input.destination %}",
                "quota_key": "{% $exists($states.input.quota_key) ? $states.input.quota_key : $states.input.destination %}"}
    return {"destination_id": destination.id,
            "quota_key": f"{{% $exists($states.input.quota_key) ? $states.input.quota_key : '{destination.quota_key}' %}}"}


def deliver_job(destination: MachineSpec | None, resources: Resources) -> str:
    """The Glue job a destination's machine delivers with (`None`: REGISTERED_MACHINE's)."""
    return f"{resources.deliver_job}-{destination.id}" if destination and resources.own_deliver_jobs else resources.deliver_job


def destination_machine(destination: MachineSpec | None, resources: Resources) -> dict:
    """The per-destination lifecycle; the execution input holds `run_id`, `input` and `consent`
    (and `prepared: true` when the scheduler prepared the run). `None` renders REGISTERED_MACHINE,
    whose input also names the `destination` (and its `quota_key`)."""
    shape = destination or _REGISTERED_SHAPE
    out = f"s3://{resources.work_bucket}"
    now = "{% $string($floor($millis() / 1000)) %}"
    common = {"--out": out, "--run_id": "{% $run.run_id %}", "--config": resources.config_uri}
    release = {
        "Type": "Task",
        "Resource": "arn:aws:states:::dynamodb:updateItem",
        "Arguments": asl_release(resources.state_table, "$quota_key", "{% $owner %}"),
    }
    held = {"lease_held": False}
    states = {
        "Init": {
            "Type": "Pass",
            "Assign": {
                "run": "{% $states.input %}",
                **_identity(destination),
                # The execution ARN: unique across machines and continuations sharing a quota key.
                "owner": "{% $states.context.Execution.Id %}",
                "deferrals": "{% $exists($states.input.deferrals) ? $states.input.deferrals : 0 %}",
                # Request retries inside deliver, summed over every delivery of this run.
                "retries": "{% $exists($states.input.retries) ? $states.input.retries : 0 %}",
                "prepared": "{% $exists($states.input.prepared) ? $states.input.prepared : false %}",
                "lease_held": False,
                "deliver_retries": 0,   # Deliver attempts that failed (each retried under a new token)
                **failure_targets(resources),
            },
            "Next": "AlreadyPrepared",
        },
        # Prepare first: the shared quota's lease is taken only for delivering.
        **_own_prepare(shape, resources, common),
        "AcquireLease": {
            "Type": "Task",
            "Resource": "arn:aws:states:::dynamodb:updateItem",
            "Arguments": asl_acquire(resources.state_table, "$quota_key", "{% $owner %}",
                                     f"{{% $string($floor($millis() / 1000) + {resources.lease_seconds}) %}}", now),
            "Assign": {"fencing_token": "{% $states.result.Attributes.fencing_token.N %}", "lease_held": True},
            # Another job holds the shared quota: wait for it, with backoff and jitter.
            "Retry": [{"ErrorEquals": ["DynamoDB.ConditionalCheckFailedException"], "IntervalSeconds": 60, "BackoffRate": 1.5,
                       "MaxAttempts": 20, "MaxDelaySeconds": 900, "JitterStrategy": "FULL"}, retry_transient()],
            "Catch": catch("Lease"),
            "Next": "Deliver",
        },
        "Deliver": {
            **{key: value for key, value in glue_task(deliver_job(destination, resources), {
                **common, "--destination": "{% $destination_id %}", "--state": f"dynamodb://{resources.state_table}",
                # Every summary status exits 0: the machine routes on summary.json; a crash fails the run.
                "--deferred_exit_code": "0", "--failed_exit_code": "0", "--superseded_exit_code": "0", "--held_exit_code": "0",
                "--blocked_exit_code": "0",
                "--fence_owner": "{% $owner %}", "--fence_token": "{% $fencing_token %}", "--lease_seconds": str(resources.lease_seconds),
            }, "Deliver", "ReadSummary", resources.job_timeout_seconds).items() if key != "Retry"},
            # Not retried in place: the failed attempt may still be running (States.Timeout, a lost
            # answer), so the next one takes the lease again, and its new token fences the old out.
            "Catch": catch("Deliver", "DeliverAgain?"),
        },
        "DeliverAgain?": {
            "Type": "Choice",
            "Choices": [{"Condition": f"{{% $deliver_retries < {resources.deliver_retries} %}}", "Next": "WaitBeforeDeliverAgain"}],
            "Default": "RecordFailure",
        },
        "WaitBeforeDeliverAgain": {"Type": "Wait", "Seconds": f"{{% {resources.deliver_retry_seconds} * ($deliver_retries + 1) %}}",
                                   "Assign": {"deliver_retries": "{% $deliver_retries + 1 %}"}, "Next": "AcquireLease"},
        "ReadSummary": {
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:s3:getObject",
            "Arguments": {"Bucket": resources.work_bucket,
                          "Key": "{% 'runs/' & $run.run_id & '/delivery/' & $destination_id & '/summary.json' %}"},
            # Deliver answered: a later failure starts its retries afresh.
            "Assign": {"summary": "{% $parse($states.result.Body) %}", "deliver_retries": 0,
                       "retries": "{% $sum([$retries, $parse($states.result.Body).retries]) %}"},
            "Retry": [retry_transient()],
            "Catch": catch("ReadSummary"),
            "Next": "Outcome",
        },
        "Outcome": {
            "Type": "Choice",
            "Choices": [
                {"Condition": "{% $summary.status = 'SUCCEEDED' %}", "Next": "ReleaseLease"},
                # Deferred, waiting for an earlier run of the destination, or fenced out (all counted
                # as deferrals); batches that failed for good are DeliveryFailed.
                {"Condition": "{% ($summary.status in ['QUOTA_DEFERRED', 'WAITING'] or ($summary.status = 'FAILED' and $summary.fenced > 0)) and "
                              f"$deferrals >= {resources.max_deferrals} %}}",
                 "Next": "DeferralLimitReached"},
                {"Condition": "{% $summary.status in ['QUOTA_DEFERRED', 'WAITING'] %}", "Next": "CountDeferral"},
                # The lease was taken over mid-delivery (it expired): the rest is pending; take it again.
                {"Condition": "{% $summary.status = 'FAILED' and $summary.fenced > 0 %}", "Next": "LeaseLost"},
                # A newer run was committed since this one was prepared: it sent nothing and is done.
                {"Condition": "{% $summary.status = 'SUPERSEDED' %}", "Next": "ReleaseLease"},
                # All but removals over the guard went: the execution fails as RemovalsHeldFailed (alert,
                # dead letter, lease released) until a person decides with approve-removals and the
                # destination runs again (or the dead letter is replayed); the run is not committed.
                {"Condition": "{% $summary.status = 'REMOVALS_HELD' %}", "Next": "RemovalsHeld"},
                # Prepare left the destination out while an earlier run's held removals wait: retrying
                # cannot help. BlockedFailed (alert, dead letter, lease released); its summary names the command.
                {"Condition": "{% $summary.status = 'BLOCKED' %}", "Next": "Blocked"},
            ],
            "Default": "DeliveryFailed",
        },
        "ReleaseLease": {**release, "Assign": held, "Retry": [retry_transient()], "Catch": catch("Release"), "Next": "Done"},
        "Done": {"Type": "Succeed", "Output": {
            "destination": "{% $destination_id %}", "run_id": "{% $run.run_id %}", "status": "{% $summary.status %}",
            "deferrals": "{% $deferrals %}", "retries": "{% $retries %}"}},
        "LeaseLost": {"Type": "Pass", "Assign": {"deferrals": "{% $deferrals + 1 %}", "lease_held": False}, "Next": "AcquireLease"},
        "CountDeferral": {"Type": "Pass", "Assign": {"deferrals": "{% $deferrals + 1 %}"}, "Next": "ReleaseBeforeWait"},
        # Nobody should hold the shared quota while waiting for it to reset.
        "ReleaseBeforeWait": {**release, "Assign": held, "Retry": [retry_transient()], "Catch": catch("Release"), "Next": "ResumeAtKnown?"},
        "ResumeAtKnown?": {
            "Type": "Choice",
            "Choices": [{"Condition": "{% $type($summary.resume_at) = 'string' %}", "Next": "WaitForQuota"}],
            "Default": "WaitAWhile",
        },
        "WaitForQuota": {"Type": "Wait", "Timestamp": "{% $summary.resume_at %}", "Next": "ContinueAsNew?"},
        "WaitAWhile": {"Type": "Wait", "Seconds": resources.retry_wait_seconds, "Next": "ContinueAsNew?"},
        "ContinueAsNew?": {
            "Type": "Choice",
            "Choices": [{"Condition": f"{{% $deferrals % {resources.continue_every} = 0 %}}", "Next": "ByScheduler?"}],
            "Default": "AcquireLease",
        },
        # Under the scheduler, its Map iteration starts the continuation and waits for it, so the
        # scheduler sees the end of the delivery, not the first execution's hand-over.
        "ByScheduler?": {
            "Type": "Choice",
            "Choices": [{"Condition": "{% $exists($run.via_scheduler) and $run.via_scheduler %}", "Next": "HandBack"}],
            "Default": "ContinueAsNew",
        },
        "HandBack": {"Type": "Succeed", "Output": {
            "destination": "{% $destination_id %}", "run_id": "{% $run.run_id %}", "status": "CONTINUE", "deferrals": "{% $deferrals %}",
            "continue_with": "{% $merge([$run, {'deferrals': $deferrals, 'retries': $retries, 'prepared': $prepared}]) %}"}},
        "ContinueAsNew": {
            "Type": "Task",
            "Resource": "arn:aws:states:::states:startExecution",
            "Arguments": {
                "StateMachineArn": "{% $states.context.StateMachine.Id %}",
                "Name": "{% $run.run_id & '-' & $destination_id & '-' & $string($deferrals) %}",
                "Input": "{% $merge([$run, {'deferrals': $deferrals, 'retries': $retries, 'prepared': $prepared}]) %}",
            },
            "Assign": {"continued_as": "{% $states.result.ExecutionArn %}"},
            "Catch": catch("ContinueAsNew"),
            "Next": "Continued",
        },
        "Continued": {"Type": "Succeed", "Output": {
            "destination": "{% $destination_id %}", "run_id": "{% $run.run_id %}", "status": "CONTINUED_AS_NEW",
            "execution": "{% $continued_as %}", "deferrals": "{% $deferrals %}"}},
        "DeferralLimitReached": {"Type": "Pass", "Assign": {"failed_phase": "DeferralLimit", "failure": "{% $summary %}"},
                                 "Next": "RecordFailure"},
        "DeliveryFailed": {"Type": "Pass", "Assign": {"failed_phase": "Delivery", "failure": "{% $summary %}"}, "Next": "RecordFailure"},
        "RemovalsHeld": {"Type": "Pass", "Assign": {"failed_phase": "RemovalsHeld", "failure": "{% $summary %}"}, "Next": "RecordFailure"},
        "Blocked": {"Type": "Pass", "Assign": {"failed_phase": "Blocked", "failure": "{% $summary %}"}, "Next": "RecordFailure"},
        **failure_tail("{% 'audience-relay ' & $destination_id & ': delivery lifecycle failed' %}", release,
                        "'destination': $destination_id, 'run_id': $run.run_id, 'deferrals': $deferrals, 'retries': $retries"),
    }
    about = (f"{destination.id} ({destination.kind}/{destination.profile})" if destination
             else "a registered destination without a machine of its own (named in the input; prepares on Glue)")
    return {
        "Comment": f"audience-relay: delivery lifecycle of {about}",
        "QueryLanguage": "JSONata",
        "StartAt": "Init",
        "States": states,
    }

