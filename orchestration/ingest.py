"""S3 "object created" events, buffered in SQS, start one scheduler execution per completed input.

An input is a folder of part files (a Spark or Glue output); it is complete when its writer
puts the completion marker (`_SUCCESS`). Starting on every part file would prepare partial
inputs, and in `mirror` mode a partial input removes everyone missing from it; so the bucket
notifies the ingest queue only for the marker under the input prefix
(`notification_configuration`), and the run's input is the marker's folder. The queue has a
dead-letter queue for messages that keep failing; `handler` is the Lambda behind the queue's
event source mapping (with `ReportBatchItemFailures`). S3 delivers events at least once, so
each marker event maps to one execution name (a hash of bucket, folder and the event's
version id or sequencer): a repeated event finds the execution already started and starts
nothing, while a later marker for new data in the same folder starts a new run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from urllib.parse import unquote_plus

from botocore.exceptions import ClientError

from audience_relay.connectors.aws import stepfunctions

LOG = logging.getLogger("audience_relay.ingest")


COMPLETION_MARKER = "_SUCCESS"


@dataclass(frozen=True)
class NewInput:
    bucket: str
    folder: str
    version: str   # the marker's version id, else the event's sequencer, else its ETag
    event_time: str

    @property
    def run_id(self) -> str:
        """Deterministic per marker event; a valid run id and execution name prefix (36 characters)."""
        digest = hashlib.sha256(f"{self.bucket}/{self.folder}@{self.version}".encode()).hexdigest()[:24]
        return f"s3-{self.event_time[:10].replace('-', '')}-{digest}"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.folder}"


def notification_configuration(queue_arn: str, prefix: str, marker: str = COMPLETION_MARKER) -> dict:
    """The input bucket's NotificationConfiguration: created completion markers under `prefix`."""
    return {"QueueConfigurations": [
        {"Id": "audience-relay-ingest", "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"],
         "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}, {"Name": "suffix", "Value": f"/{marker}"}]}}},
    ]}


def parse_s3_event(message_body: str) -> list[tuple[str, str, dict, str]]:
    """(bucket, key, object, event time) of each created object one SQS message names; S3's test
    event names none. Keys arrive URL-encoded ('+' for spaces) and are returned decoded.

    Raises ValueError for a body that is not an S3 event notification.
    """
    try:
        event = json.loads(message_body)
    except json.JSONDecodeError as error:
        raise ValueError(f"not an S3 event notification: {error}") from None
    if event.get("Event") == "s3:TestEvent":
        return []
    if not isinstance(event.get("Records"), list):
        raise ValueError("not an S3 event notification: no Records")
    return [(record["s3"]["bucket"]["name"], unquote_plus(record["s3"]["object"]["key"]), record["s3"]["object"], record["eventTime"])
            for record in event["Records"] if str(record.get("eventName", "")).startswith("ObjectCreated:")]


def new_inputs(message_body: str, marker: str = COMPLETION_MARKER) -> list[NewInput]:
    """The completed input folders named by one SQS message; other objects and S3's test event name none.

    Raises ValueError for a body that is not an S3 event notification.
    """
    found = []
    for bucket, key, obj, event_time in parse_s3_event(message_body):
        folder, _, name = key.rpartition("/")
        if name != marker:
            continue
        # S3 keys are names: `in/../other/` is an ordinary key, but Hadoop's Path (Glue, EMR)
        # and the local runner normalize it to `other/`, outside the notified prefix.
        if not folder or any(part in ("", ".", "..") for part in folder.split("/")):
            raise ValueError(f"S3 event key {key!r} in bucket {bucket!r}: the input folder may not be the "
                             "bucket root or hold '.', '..' or empty segments")
        version = obj.get("versionId") or obj.get("sequencer") or obj.get("eTag", "")
        found.append(NewInput(bucket, folder + "/", version, event_time))
    return found


def start_runs(messages: list[dict], state_machine_arn: str, consent_uri: str, sfn=None, marker: str = COMPLETION_MARKER) -> dict:
    """Start the scheduler for every completed input; the Lambda batch response lists messages to retry."""
    sfn = sfn or stepfunctions.client()
    failures = []
    for message in messages:
        try:
            for found in new_inputs(message["body"], marker):
                payload = {"run_id": found.run_id, "input": found.uri, "consent": consent_uri}
                try:
                    stepfunctions.start_execution(sfn, state_machine_arn, found.run_id, payload)
                    outcome = "started"
                except ClientError as error:
                    if error.response["Error"]["Code"] != "ExecutionAlreadyExists":
                        raise
                    outcome = "duplicate"
                LOG.info(json.dumps({"event": "ingest.object", "outcome": outcome, "run_id": found.run_id, "object": found.uri}))
        except (ValueError, KeyError, ClientError) as error:
            # Retried by SQS, then moved to the ingest dead-letter queue with the message intact.
            LOG.error(json.dumps({"event": "ingest.failed", "message_id": message["messageId"], "error": str(error)[:500]}))
            failures.append({"itemIdentifier": message["messageId"]})
    return {"batchItemFailures": failures}


def handler(event: dict, context: object) -> dict:
    """Lambda entry point: configured by SCHEDULER_ARN, CONSENT_URI and optionally COMPLETION_MARKER."""
    return start_runs(event["Records"], os.environ["SCHEDULER_ARN"], os.environ["CONSENT_URI"],
                      marker=os.environ.get("COMPLETION_MARKER", COMPLETION_MARKER))
