"""An ingest stage on the moto server for the window ingest and run catalog tests."""
import gzip
import json
import uuid

import boto3

from audience_relay.connectors.state.dynamodb import create_table
from audience_relay.orchestration.file_checks import LandedFile
from audience_relay.orchestration.file_claims import FileClaims
from audience_relay.orchestration.ingest_window import AwsClients, WindowSettings, gather_window
from audience_relay.orchestration.local.window_poller import run_window

HEADER = "user_id,id_type,id_value,segment_id\n"


def members(first: int, count: int) -> bytes:
    rows = "".join(f"user{n},email,person{n}@example.com,seg_0001\n" for n in range(first, first + count))
    return gzip.compress((HEADER + rows).encode())


class Stage:
    """An input bucket notifying an ingest queue (with its DLQ), a work bucket, a state table and a scheduler."""

    def __init__(self, window_files: int = 100, window_seconds: float = 1, visibility_seconds: int = 30) -> None:
        tag = uuid.uuid4().hex[:8]
        self.s3, self.sqs, self.sfn = boto3.client("s3"), boto3.client("sqs"), boto3.client("stepfunctions")
        self.input, self.work, table = f"input-{tag}", f"work-{tag}", f"state-{tag}"
        for bucket in (self.input, self.work):
            self.s3.create_bucket(Bucket=bucket)
        self.dlq = self.sqs.create_queue(QueueName=f"ingest-dlq-{tag}")["QueueUrl"]
        dlq_arn = self.sqs.get_queue_attributes(QueueUrl=self.dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.queue = self.sqs.create_queue(QueueName=f"ingest-{tag}", Attributes={
            "VisibilityTimeout": str(visibility_seconds), "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})})["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.s3.put_bucket_notification_configuration(Bucket=self.input, NotificationConfiguration={"QueueConfigurations": [{
            "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "incoming/"}, {"Name": "suffix", "Value": ".csv.gz"}]}}}]})
        create_table(table)
        self.scheduler = self.sfn.create_state_machine(
            name=f"scheduler-{tag}", roleArn="arn:aws:iam::123456789012:role/machines",
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}))["stateMachineArn"]
        self.settings = WindowSettings(
            scheduler_arn=self.scheduler, consent_uri=f"s3://{self.input}/consent/", state_table=table, work_bucket=self.work,
            quarantine_prefix="quarantine/", dead_letter_queue_url=self.dlq, max_file_bytes=1_000_000, stale_seconds=60)
        self.window_files, self.window_seconds = window_files, window_seconds
        self.claims = FileClaims(table, "inspector", 60)
        self.drain_test_event()

    def drain_test_event(self) -> None:
        """S3 sends `s3:TestEvent` when the notification is set; a window acknowledges it."""
        assert self.window().retried == 0

    def land(self, key: str, body: bytes) -> LandedFile:
        etag = self.s3.put_object(Bucket=self.input, Key=key, Body=body)["ETag"].strip('"')
        return LandedFile(self.input, key, etag, len(body), "")

    def window(self):
        return run_window(self.sqs, self.queue, self.window_files, self.window_seconds,
                          lambda records: gather_window(records, self.settings, AwsClients.default()), idle_seconds=1)

    def executions(self) -> list[dict]:
        found = self.sfn.list_executions(stateMachineArn=self.scheduler)["executions"]
        return sorted((json.loads(self.sfn.describe_execution(executionArn=e["executionArn"])["input"]) for e in found),
                      key=lambda payload: payload["run_id"])

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        return sorted(o["Key"] for o in self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))

    def dead_letters(self) -> list[dict]:
        found = self.sqs.receive_message(QueueUrl=self.dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        return sorted((json.loads(m["Body"]) for m in found), key=lambda body: body["file"])
