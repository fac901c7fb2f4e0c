"""S3 "object created" events, buffered in SQS, start one scheduler execution per new input object.

The bucket notifies the ingest queue only for keys under the input prefix with an input
suffix (`notification_configuration`); the queue has a dead-letter queue for messages that
keep failing. `handler` is the Lambda behind the queue's event source mapping (with
`ReportBatchItemFailures`). S3 delivers events at least once, so each object version maps to
one execution name (a hash of bucket, key and ETag): a repeated event finds the execution
already started and starts nothing.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from urllib.parse import unquote_plus

import boto3
from botocore.exceptions import ClientError

LOG = logging.getLogger("audience_relay.ingest")


@dataclass(frozen=True)
class NewInput:
    bucket: str
    key: str
    etag: str
    event_time: str

    @property
    def run_id(self) -> str:
        """Deterministic per object version; a valid run id and execution name (<= 80 chars)."""
        digest = hashlib.sha256(f"{self.bucket}/{self.key}@{self.etag}".encode()).hexdigest()[:24]
        return f"s3-{self.event_time[:10].replace('-', '')}-{digest}"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def notification_configuration(queue_arn: str, prefix: str, suffixes: list[str]) -> dict:
    """The bucket's NotificationConfiguration: one queue rule per input suffix (S3 allows one per rule)."""
    return {"QueueConfigurations": [
        {"Id": f"audience-relay-ingest{suffix.replace('.', '-')}", "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"],
         "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}, {"Name": "suffix", "Value": suffix}]}}}
        for suffix in suffixes
    ]}


def new_inputs(message_body: str) -> list[NewInput]:
    """The created objects named by one SQS message; S3's test event names none. Raises ValueError on garbage."""
    try:
        event = json.loads(message_body)
    except json.JSONDecodeError as error:
        raise ValueError(f"not an S3 event notification: {error}") from None
    if event.get("Event") == "s3:TestEvent":
        return []
    if not isinstance(event.get("Records"), list):
        raise ValueError("not an S3 event notification: no Records")
    found = []
    for record in event["Records"]:
        if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        s3 = record["s3"]
        # Keys arrive URL-encoded with '+' for spaces.
        found.append(NewInput(s3["bucket"]["name"], unquote_plus(s3["object"]["key"]), s3["object"].get("eTag", ""), record["eventTime"]))
    return found


def start_runs(messages: list[dict], state_machine_arn: str, consent_uri: str, sfn=None) -> dict:
    """Start the scheduler for every new input; the Lambda batch response lists messages to retry."""
    sfn = sfn or boto3.client("stepfunctions")
    failures = []
    for message in messages:
        try:
            for found in new_inputs(message["body"]):
                payload = {"run_id": found.run_id, "input": found.uri, "consent": consent_uri}
                try:
                    sfn.start_execution(stateMachineArn=state_machine_arn, name=found.run_id, input=json.dumps(payload))
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
    """Lambda entry point: configured by SCHEDULER_ARN and CONSENT_URI."""
    return start_runs(event["Records"], os.environ["SCHEDULER_ARN"], os.environ["CONSENT_URI"])
