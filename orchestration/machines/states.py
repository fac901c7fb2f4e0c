"""Task states every machine shares: transient-error retries, the typed catch, Glue `.sync` tasks
and the failure tail (alert, dead letter, fail naming the phase)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from audience_relay.orchestration.machines.specs import Resources

TRANSIENT = ["States.Timeout", "Glue.AWSGlueException", "Glue.ConcurrentRunsExceededException", "States.TaskFailed"]
GLUE_SYNC = "arn:aws:states:::glue:startJobRun.sync"
LAMBDA_TRANSIENT = ["Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
                    "Lambda.TooManyRequestsException"]


def failure_targets(resources: Resources) -> dict:
    """The variables the failure tail sends to (`$alert_topic`, `$dead_letter_queue`), for a machine's Init to assign."""
    return {"alert_topic": resources.alert_topic_arn, "dead_letter_queue": resources.dead_letter_queue_url}


def retry_transient() -> dict:
    return {"ErrorEquals": TRANSIENT, "IntervalSeconds": 30, "BackoffRate": 2.0, "MaxAttempts": 3,
            "MaxDelaySeconds": 600, "JitterStrategy": "FULL"}


def catch(phase: str, next_state: str = "RecordFailure") -> list[dict]:
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


def glue_task(job: str, arguments: dict, phase: str, next_state: str, timeout: int) -> dict:
    reserved = sorted(set(arguments) & GLUE_RESERVED_ARGUMENTS)
    if reserved:
        raise ReservedGlueArgument(f"Glue job {job} ({phase}): arguments {reserved} are reserved by Glue "
                                   "(awsglue's getResolvedOptions refuses or overrides them); rename them")
    return {
        "Type": "Task",
        "Resource": GLUE_SYNC,
        "Arguments": {"JobName": job, "Arguments": arguments},
        "TimeoutSeconds": timeout,
        "Retry": [retry_transient()],
        "Catch": catch(phase),
        "Next": next_state,
    }


def failure_tail(subject: str, release: dict | None, context: str) -> dict:
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
            "ReleaseAfterFailure": {**release, "Retry": [retry_transient()], "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Alert"}],
                                    "Next": "Alert"},
        }
    return {
        **states,
        **alert_and_dead_letter("", subject, context, "Failed"),
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


def alert_and_dead_letter(prefix: str, subject: str, context: str, next_state: str) -> dict:
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

