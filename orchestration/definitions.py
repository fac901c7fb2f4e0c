"""Step Functions definitions (ASL, JSONata) built from the destination config.

One Standard state machine per destination runs its whole delivery lifecycle:
acquire the quota lease -> prepare its own run, unless the scheduler prepared it already (a
Glue job, or a step on an on-demand EMR cluster created and terminated by the machine; then
an optional extra Glue transform job) -> deliver (Glue job) -> read the delivery summary -> done, or on `QUOTA_DEFERRED` release the lease, wait
until `resume_at` and deliver again. Every phase has a typed `Catch` that releases the lease,
alerts (SNS), records the failure with the execution's context (SQS dead-letter queue) and
fails with an error naming the phase. Deferrals are counted in the state; past the limit the
execution fails loudly, and every `continue_every` deferrals it continues as a new execution
to stay far from the 25,000-event history limit.

A scheduler machine prepares one input once for every active destination (normalizing
billions of rows once, not once per destination), then fans out to the per-destination
machines with a Map (`states:startExecution.sync:2`, bounded concurrency), so one slow or
failing destination never stalls the others; it fails at the end, naming the destinations
that failed.

A destination registered through the control plane after the last deploy has no machine of its
own yet: the scheduler, and the control plane's run start, run it on `destination-_registered`,
the same lifecycle reading the destination and its quota key from the execution input and
preparing on Glue. Every machine takes the quota key from its input when given (the scheduler
passes the registry's), so a quota change through the control plane needs no deploy either.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from connectors.state.lease import asl_acquire, asl_release


# Destination ids are lower case and start with a letter or digit: no destination's machine takes this name.
REGISTERED = "_registered"
REGISTERED_MACHINE = f"destination-{REGISTERED}"
TRANSIENT = ["States.Timeout", "Glue.AWSGlueException", "Glue.ConcurrentRunsExceededException", "States.TaskFailed"]
GLUE_SYNC = "arn:aws:states:::glue:startJobRun.sync"


@dataclass(frozen=True)
class EmrCluster:
    """The on-demand cluster a destination's machine prepares on (config `orchestration.emr`)."""

    release: str = "emr-7.9.0"   # Spark 3.5, like Glue 5.1
    instance_type: str = "m6g.xlarge"
    core_instances: int = 2
    idle_timeout_seconds: int = 3600   # a backstop: the machine terminates the cluster itself
    subnet_id: str | None = None   # else the default VPC; tagged for-use-with-amazon-emr-managed-policies=true either way


@dataclass(frozen=True)
class MachineSpec:
    """What a destination's machine needs to know (built by jobs/ from the config)."""

    id: str
    kind: str
    profile: str
    quota_key: str
    prepare_engine: str = "glue"
    transform_job: str | None = None
    emr: EmrCluster = EmrCluster()   # the cluster when prepare_engine is "emr"


@dataclass(frozen=True)
class Resources:
    """Names and ARNs the definitions point at; infra/ creates them per stage."""

    stage: str = "local"   # tags the EMR clusters a stage's machines create (and may drive)
    registry_table: str | None = None   # the scheduler fans out to its active destinations (else the rendered list)
    registry_page_size: int | None = None   # items per registry scan page (tests); DynamoDB's 1 MB page otherwise
    state_table: str = "audience-relay-state"
    prepare_job: str = "audience-relay-prepare"
    deliver_job: str = "audience-relay-deliver"
    # Each destination's machine runs a deliver job of its own, `<deliver_job>-<id>` (a deployed
    # stage: each under a role that reads only that destination's secret); `deliver_job` then
    # runs the destinations registered since the deploy.
    own_deliver_jobs: bool = False
    work_bucket: str = "audience-relay-work"
    config_uri: str = "s3://audience-relay-artifacts/config/destinations.yaml"
    alert_topic_arn: str = "arn:aws:sns:us-east-1:123456789012:audience-relay-alerts"
    dead_letter_queue_url: str = "https://sqs.us-east-1.amazonaws.com/123456789012/audience-relay-failures"
    destination_machine_arn_prefix: str = "arn:aws:states:us-east-1:123456789012:stateMachine:audience-relay-destination-"
    # On-demand EMR clusters for destinations whose config says `prepare_engine: emr`.
    prepare_script_uri: str = "s3://audience-relay-artifacts/jobs/prepare.py"
    library_wheel_uri: str = "s3://audience-relay-artifacts/dist/audience_relay-0.1.0-py3-none-any.whl"
    emr_bootstrap_uri: str = "s3://audience-relay-artifacts/emr/bootstrap.sh"   # infra/emr/bootstrap.sh
    emr_service_role: str = "audience-relay-emr-service"
    emr_instance_profile: str = "audience-relay-emr-instance"
    emr_log_uri: str = "s3://audience-relay-artifacts/emr-logs/"
    lease_seconds: int = 4 * 3600
    job_timeout_seconds: int = 8 * 3600   # a hung Glue run or EMR step fails the task instead of hanging the machine
    cluster_timeout_seconds: int = 3600
    retry_wait_seconds: int = 900   # deferred without a resume_at (nothing sent yet): look again after this
    deliver_retry_seconds: int = 60  # a failed Deliver attempt is retried after this, times the attempt number
    deliver_retries: int = 3
    max_deferrals: int = 30
    continue_every: int = 10
    # Delivery feedback: the scheduler starts the feedback machine after a run delivered everywhere
    # (when its ARN is set), which waits for the platforms to count the uploads, then asks them.
    feedback_machine_arn: str | None = None
    feedback_delay_seconds: int = 6 * 3600
    feedback_function: str = "audience-relay-feedback"
    feedback_job: str = "audience-relay-feedback"
    feedback_concurrency: int = 10
    # The run catalog's Lambda (inside the catalog's VPC): when set, the scheduler records each
    # run's accounting there once its destinations have ended.
    catalog_function: str | None = None


LAMBDA_TRANSIENT = ["Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
                    "Lambda.TooManyRequestsException"]


def _retry_transient() -> dict:
    return {"ErrorEquals": TRANSIENT, "IntervalSeconds": 30, "BackoffRate": 2.0, "MaxAttempts": 3,
            "MaxDelaySeconds": 600, "JitterStrategy": "FULL"}


def _catch(phase: str, next_state: str = "RecordFailure") -> list[dict]:
    return [{"ErrorEquals": ["States.ALL"], "Next": next_state,
             "Assign": {"failed_phase": phase, "failure": "{% $states.errorOutput %}"}}]


# Argument names a Glue job run cannot give a job: awsglue's getResolvedOptions refuses or
# re-declares them (Job.continuation_options, job_bookmark_options, job_bookmark_range_options,
# id_params, encryption_type_options, and TempDir/RedshiftTempDir it takes for itself), and
# JOB_NAME is Glue's own. tests/unit/test_args.py keeps this list equal to awsglue's.
GLUE_RESERVED_ARGUMENTS = frozenset({
    "--continuation-option", "--job-bookmark-option", "--job-bookmark-from", "--job-bookmark-to",
    "--JOB_NAME", "--JOB_ID", "--JOB_RUN_ID", "--SECURITY_CONFIGURATION", "--encryption-type",
    "--TempDir", "--RedshiftTempDir",
})


class ReservedGlueArgument(ValueError):
    """A Glue job's argument has a name Glue's argument parser reserves."""


def _glue(job: str, arguments: dict, phase: str, next_state: str, timeout: int) -> dict:
    reserved = sorted(set(arguments) & GLUE_RESERVED_ARGUMENTS)
    if reserved:
        raise ReservedGlueArgument(f"Glue job {job} ({phase}): arguments {reserved} are reserved by Glue "
                                   "(awsglue's getResolvedOptions refuses or overrides them); rename them")
    return {
        "Type": "Task",
        "Resource": GLUE_SYNC,
        "Arguments": {"JobName": job, "Arguments": arguments},
        "TimeoutSeconds": timeout,
        "Retry": [_retry_transient()],
        "Catch": _catch(phase),
        "Next": next_state,
    }


def _failure_tail(subject: str, release: dict | None, context: str) -> dict:
    """RecordFailure (release the lease, if any) -> Alert (SNS) -> DeadLetter (SQS) -> Fail `<Phase>Failed`.

    `context` is a JSONata object body (`'key': value, ...`) added to the alert and the message.
    Each step's own failure is caught so the next one still runs.
    """
    states = {"RecordFailure": {"Type": "Pass", "Next": "Alert"}}
    if release:
        states = {
            "RecordFailure": {"Type": "Choice", "Choices": [{"Condition": "{% $lease_held %}", "Next": "ReleaseAfterFailure"}],
                              "Default": "Alert"},
            # Retried like the other releases: a throttled call must not leave the quota locked until the lease expires.
            "ReleaseAfterFailure": {**release, "Retry": [_retry_transient()], "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Alert"}],
                                    "Next": "Alert"},
        }
    return {
        **states,
        **_alert_and_dead_letter("", subject, context, "Failed"),
        # The Cause is shown in the console and sent to EventBridge: redacted like the dead letter.
        "Failed": {"Type": "Fail", "Error": "{% $failed_phase & 'Failed' %}", "Cause": "{% $string(" + REDACTED_FAILURE + ") %}"},
    }


# `$failure` with identifiers replaced, for the alert and the dead letter: a job's error text (Glue's
# ErrorMessage, a Spark task failure) may quote the row it failed on. Emails, MAIDs and phones
# written as phones (a leading `+`, or 3-3-4 digits with separators); bare digit runs are left,
# since a JSON number (a count, a timestamp) would turn into text that no longer parses.
REDACTED_FAILURE = (
    "$parse($replace($replace($replace($string($failure), "
    "/[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)+/, '<email>'), "
    "/[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}/, '<maid>'), "
    "/\\+[0-9][0-9 ().-]{5,}[0-9]|\\(?[0-9]{3}\\)?[ .-][0-9]{3}[ .-][0-9]{4}/, '<phone>'))"
)


def _alert_and_dead_letter(prefix: str, subject: str, context: str, next_state: str) -> dict:
    """`<prefix>Alert` (SNS) -> `<prefix>DeadLetter` (SQS) -> `next_state`, saying `$failed_phase`
    and `$failure`; each step's own failure is caught so the next one still runs."""
    return {
        f"{prefix}Alert": {
            "Type": "Task",
            "Resource": "arn:aws:states:::sns:publish",
            "Arguments": {
                "TopicArn": "{% $alert_topic %}",
                "Subject": subject,
                "Message": "{% $string({" + context + ", 'phase': $failed_phase, 'execution': $states.context.Execution.Id}) %}",
            },
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": f"{prefix}DeadLetter"}],
            "Next": f"{prefix}DeadLetter",
        },
        f"{prefix}DeadLetter": {
            "Type": "Task",
            "Resource": "arn:aws:states:::sqs:sendMessage",
            "Arguments": {
                "QueueUrl": "{% $dead_letter_queue %}",
                "MessageBody": "{% $string({" + context + ", 'phase': $failed_phase, 'error': " + REDACTED_FAILURE + ", "
                               "'execution': $states.context.Execution.Id, 'input': $run}) %}",
            },
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": next_state}],
            "Next": next_state,
        },
    }


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
            "Catch": _catch("Prepare"),
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
            "Catch": _catch("Prepare", "TerminateClusterAfterFailure"),
            "Next": "TerminateCluster",
        },
        "TerminateCluster": {
            "Type": "Task",
            "Resource": "arn:aws:states:::elasticmapreduce:terminateCluster",
            "Arguments": cluster,
            "Retry": [_retry_transient()],
            "Catch": _catch("TerminateCluster"),
            "Next": next_state,
        },
        "TerminateClusterAfterFailure": {
            "Type": "Task",
            "Resource": "arn:aws:states:::elasticmapreduce:terminateCluster",
            "Arguments": cluster,
            "Retry": [_retry_transient()],
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
        states = {"Prepare": _glue(resources.prepare_job, arguments, "Prepare", after_prepare, resources.job_timeout_seconds)}
        first = "Prepare"
    if destination.transform_job:
        states["Transform"] = _glue(destination.transform_job, {**common, "--destination": "{% $destination_id %}"}, "Transform", "MarkPrepared",
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
                "alert_topic": resources.alert_topic_arn,
                "dead_letter_queue": resources.dead_letter_queue_url,
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
                       "MaxAttempts": 20, "MaxDelaySeconds": 900, "JitterStrategy": "FULL"}, _retry_transient()],
            "Catch": _catch("Lease"),
            "Next": "Deliver",
        },
        "Deliver": {
            **{key: value for key, value in _glue(deliver_job(destination, resources), {
                **common, "--destination": "{% $destination_id %}", "--state": f"dynamodb://{resources.state_table}",
                # Every summary status exits 0: the machine routes on summary.json; a crash fails the run.
                "--deferred_exit_code": "0", "--failed_exit_code": "0", "--superseded_exit_code": "0", "--held_exit_code": "0",
                "--blocked_exit_code": "0",
                "--fence_owner": "{% $owner %}", "--fence_token": "{% $fencing_token %}", "--lease_seconds": str(resources.lease_seconds),
            }, "Deliver", "ReadSummary", resources.job_timeout_seconds).items() if key != "Retry"},
            # Not retried in place: the failed attempt may still be running (States.Timeout, a lost
            # answer), so the next one takes the lease again, and its new token fences the old out.
            "Catch": _catch("Deliver", "DeliverAgain?"),
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
            "Retry": [_retry_transient()],
            "Catch": _catch("ReadSummary"),
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
        "ReleaseLease": {**release, "Assign": held, "Retry": [_retry_transient()], "Catch": _catch("Release"), "Next": "Done"},
        "Done": {"Type": "Succeed", "Output": {
            "destination": "{% $destination_id %}", "run_id": "{% $run.run_id %}", "status": "{% $summary.status %}",
            "deferrals": "{% $deferrals %}", "retries": "{% $retries %}"}},
        "LeaseLost": {"Type": "Pass", "Assign": {"deferrals": "{% $deferrals + 1 %}", "lease_held": False}, "Next": "AcquireLease"},
        "CountDeferral": {"Type": "Pass", "Assign": {"deferrals": "{% $deferrals + 1 %}"}, "Next": "ReleaseBeforeWait"},
        # Nobody should hold the shared quota while waiting for it to reset.
        "ReleaseBeforeWait": {**release, "Assign": held, "Retry": [_retry_transient()], "Catch": _catch("Release"), "Next": "ResumeAtKnown?"},
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
            "Catch": _catch("ContinueAsNew"),
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
        **_failure_tail("{% 'audience-relay ' & $destination_id & ': delivery lifecycle failed' %}", release,
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
            "Retry": [_retry_transient()],
            "Catch": _catch("ListDestinations"),
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
                "alert_topic": resources.alert_topic_arn,
                "dead_letter_queue": resources.dead_letter_queue_url,
                "destinations": [] if listing else rendered,
                **({"registry_page": None} if listing else {}),
            }, "Next": "ListDestinations" if listing else "Prepare"},
            **listing,
            "Prepare": _glue(resources.prepare_job, {
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
                "Catch": _catch("Destinations"),
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
                "Retry": [{"ErrorEquals": ["StepFunctions.ExecutionAlreadyExistsException"], "MaxAttempts": 0}, _retry_transient()],
                "Catch": [{"ErrorEquals": ["StepFunctions.ExecutionAlreadyExistsException"], "Next": "Done"},
                          *_catch("StartFeedback")],
                "Next": "Done",
            }} if resources.feedback_machine_arn else {}),
            "Done": {"Type": "Succeed", "Output": {"run_id": "{% $run.run_id %}", "destinations": "{% $results %}"}},
            # `[...]`: a JSONata filter matching one item yields the item itself; the dead letter
            # always carries a list of failed destinations.
            "SomeDestinationsFailed": {"Type": "Pass", "Assign": {
                "failed_phase": "Destinations", "failure": "{% [$results[status = 'FAILED']] %}"}, "Next": "RecordFailure"},
            **_failure_tail("audience-relay: scheduled run failed", None, "'run_id': $run.run_id"),
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
        **_alert_and_dead_letter("Catalog", "audience-relay: run not recorded in the run catalog", "'run_id': $run.run_id",
                                 next_state),
    }


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
                "alert_topic": resources.alert_topic_arn,
                "dead_letter_queue": resources.dead_letter_queue_url,
            }, "Next": "WaitForCounts"},
            "WaitForCounts": {"Type": "Wait",
                              "Seconds": "{% $exists($states.input.wait_seconds) ? $states.input.wait_seconds : 0 %}",
                              "Next": "ListDestinations"},
            "ListDestinations": {**_invoke_feedback(resources, {"action": "list", "run_id": run_id}),
                                 "Assign": {"destinations": "{% [$states.result.Payload.destinations] %}"},
                                 "Catch": _catch("ListDestinations"), "Next": "AnyToAsk?"},
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
                "Catch": _catch("AskDestinations"),
                "Next": "Consolidate",
            },
            "Consolidate": _glue(resources.feedback_job, {
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
            **_failure_tail("audience-relay: delivery feedback incomplete", None, "'run_id': $run.run_id"),
        },
    }


def machine_specs(destinations) -> list[MachineSpec]:
    """One spec per configured destination (`jobs.config` destination objects)."""
    return [MachineSpec(d.id, d.kind, d.profile, d.quota_key, d.orchestration.prepare_engine, d.orchestration.transform_job,
                        EmrCluster(**d.orchestration.emr.model_dump()))
            for d in destinations]


def render(destinations: list[MachineSpec], resources: Resources, out: str | Path) -> list[Path]:
    """Write one ASL JSON file per machine; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, definition in machines(destinations, resources).items():
        path = out / f"{name}.asl.json"
        path.write_text(json.dumps(definition, indent=2) + "\n")
        written.append(path)
    return written


def machines(destinations: list[MachineSpec], resources: Resources) -> dict[str, dict]:
    """Every machine's definition by name: `destination-<id>` for each destination, REGISTERED_MACHINE, `scheduler` and `feedback`."""
    found = {f"destination-{d.id}": destination_machine(d, resources) for d in destinations}
    found[REGISTERED_MACHINE] = destination_machine(None, resources)
    found["scheduler"] = scheduler_machine(destinations, resources)
    found["feedback"] = feedback_machine(resources)
    return found
