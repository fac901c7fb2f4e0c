"""Windowed file ingest: the files one window of S3 events names become one prepare run.

In `window` mode (config `ingest.mode`) the input bucket notifies the ingest queue of every
file under the input prefix whose name ends in the configured suffix (S3 filters at the
source). Lambda's SQS event source mapping gathers up to `window_files` messages or waits up to
`window_seconds` (`BatchSize`, `MaximumBatchingWindowInSeconds`) and hands them to `handler` in
one invocation: one window. `orchestration.local.window_poller` gathers windows the same way
without Lambda.

For each window:
1. every file version (key and ETag) is claimed once (`file_claims`): a repeated event finds
   its claim and does nothing;
2. each claimed file is checked on its own (`file_checks`); a bad one is moved to the
   quarantine prefix (with its reason in the object's metadata) and reported on the ingest
   dead-letter queue, and the others proceed;
3. the good files are copied, pinned to the checked ETag, into the run's input folder
   (`s3://<work>/runs/<run_id>/input/`, with `_sources.json` naming each original), and one
   scheduler execution starts for them. The run id is a hash of the files, so a retried
   window with the same files finds its execution already started.

A message is reported for retry (`batchItemFailures`) when one of its files could not be
settled: another live window holds it, or a call failed. Claims of files whose run did not
start are released first, so the retry judges them again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath

import boto3
from botocore.exceptions import ClientError

from orchestration.file_checks import LandedFile, Rejected, Superseded, check_file
from orchestration.file_claims import Claim, FileClaims
from orchestration.ingest import parse_s3_event

LOG = logging.getLogger("audience_relay.ingest")
PARALLEL_FILES = 16   # S3 calls in flight per window (checks, copies)


@dataclass(frozen=True)
class WindowSettings:
    scheduler_arn: str
    consent_uri: str
    state_table: str
    work_bucket: str             # a run's input folder: s3://<work_bucket>/runs/<run_id>/input/
    quarantine_prefix: str       # in the input bucket, outside the notified prefix
    dead_letter_queue_url: str
    max_file_bytes: int
    stale_seconds: int           # a claim older than this, never settled, may be taken over

    @classmethod
    def from_environment(cls, environ: dict[str, str] = os.environ) -> WindowSettings:
        return cls(
            scheduler_arn=environ["SCHEDULER_ARN"], consent_uri=environ["CONSENT_URI"], state_table=environ["STATE_TABLE"],
            work_bucket=environ["WORK_BUCKET"], quarantine_prefix=environ["QUARANTINE_PREFIX"],
            dead_letter_queue_url=environ["DEAD_LETTER_QUEUE_URL"], max_file_bytes=int(environ["MAX_FILE_BYTES"]),
            stale_seconds=int(environ["CLAIM_STALE_SECONDS"]),
        )


@dataclass
class AwsClients:
    s3: object
    sqs: object
    sfn: object
    dynamodb: object   # a boto3 DynamoDB resource

    @classmethod
    def default(cls) -> AwsClients:
        return cls(boto3.client("s3"), boto3.client("sqs"), boto3.client("stepfunctions"), boto3.resource("dynamodb"))


def landed_files(message_body: str) -> list[LandedFile]:
    """The created objects one SQS message names; S3's test event names none. ValueError for a bad body."""
    return [LandedFile(bucket, key, str(obj.get("eTag", "")).strip('"'), int(obj.get("size", 0)), event_time)
            for bucket, key, obj, event_time in parse_s3_event(message_body)]


def window_run_id(files: list[LandedFile]) -> str:
    """`w-<day of the earliest event>-<hash of the files' versions>`: the same files, the same run."""
    digest = hashlib.sha256("\n".join(sorted(f"{f.uri}@{f.etag}" for f in files)).encode()).hexdigest()[:24]
    return f"w-{min(f.event_time for f in files)[:10].replace('-', '')}-{digest}"


def _log(event: str, **fields) -> None:
    LOG.info(json.dumps({"event": event, **fields}))


class Window:
    """One invocation's messages, judged and started as one run."""

    def __init__(self, settings: WindowSettings, clients: AwsClients) -> None:
        self.settings, self.clients = settings, clients
        self.window_id = uuid.uuid4().hex
        self.claims = FileClaims(settings.state_table, self.window_id, settings.stale_seconds, clients.dynamodb)
        self.failed_messages: set[str] = set()

    def gather(self, messages: list[dict]) -> dict:
        carriers: dict[tuple[str, str], list[str]] = defaultdict(list)   # (uri, etag) -> message ids
        files: dict[tuple[str, str], LandedFile] = {}
        for message in messages:
            try:
                for landed in landed_files(message["body"]):
                    files.setdefault((landed.uri, landed.etag), landed)
                    carriers[(landed.uri, landed.etag)].append(message["messageId"])
            except (ValueError, KeyError) as error:
                # Retried by SQS, then moved to the dead-letter queue with the message intact.
                LOG.error(json.dumps({"event": "ingest.bad_message", "message_id": message["messageId"], "error": str(error)[:500]}))
                self.failed_messages.add(message["messageId"])
        ours = []
        for version, landed in files.items():
            claim = self.claims.claim(landed)
            if claim is Claim.OURS:
                ours.append(landed)
            elif claim is Claim.HELD:
                self.failed_messages.update(carriers[version])
            _log("ingest.file", file=landed.uri, etag=landed.etag, claim=claim.value, window=self.window_id)
        with ThreadPoolExecutor(PARALLEL_FILES) as pool:
            verdicts = list(pool.map(self._judge, ours))
        accepted = [landed for landed, verdict in zip(ours, verdicts) if verdict == "accepted"]
        for landed, verdict in zip(ours, verdicts):
            if verdict == "failed":
                self.failed_messages.update(carriers[(landed.uri, landed.etag)])
        if accepted and not self._start(accepted):
            for landed in accepted:
                self.failed_messages.update(carriers[(landed.uri, landed.etag)])
        return {"batchItemFailures": [{"itemIdentifier": m} for m in sorted(self.failed_messages)]}

    def _judge(self, landed: LandedFile) -> str:
        """accepted | quarantined | superseded | failed (released, to be retried)."""
        try:
            check_file(self.clients.s3, landed, self.settings.max_file_bytes)
            return "accepted"
        except Superseded as why:
            self.claims.settle(landed, "superseded", reason=str(why))
            _log("ingest.superseded", file=landed.uri, etag=landed.etag, window=self.window_id)
            return "superseded"
        except Rejected as why:
            return self._quarantine(landed, str(why))
        except Exception as error:   # noqa: BLE001 - a failed call: give the file back, retry its message
            return self._give_back(landed, error)

    def _quarantine(self, landed: LandedFile, reason: str) -> str:
        """Move the file under the quarantine prefix and report it on the dead-letter queue."""
        target = self.settings.quarantine_prefix + landed.key
        try:
            self.clients.s3.copy_object(
                Bucket=landed.bucket, Key=target, CopySource={"Bucket": landed.bucket, "Key": landed.key},
                CopySourceIfMatch=f'"{landed.etag}"', MetadataDirective="REPLACE",
                Metadata={"audience-relay-reason": reason.encode("ascii", "replace").decode()[:1000],
                          "audience-relay-source-etag": landed.etag, "audience-relay-window": self.window_id},
            )
            self.clients.sqs.send_message(QueueUrl=self.settings.dead_letter_queue_url, MessageBody=json.dumps({
                "event": "ingest.quarantined", "file": landed.uri, "etag": landed.etag, "size": landed.size,
                "reason": reason, "quarantined_to": f"s3://{landed.bucket}/{target}", "window": self.window_id,
            }))
            self.claims.settle(landed, "quarantined", reason=reason)
        except Exception as error:   # noqa: BLE001 - nothing is settled: the retry quarantines it
            return self._give_back(landed, error)
        try:   # last: a newer version under the same key (another ETag) is left alone
            self.clients.s3.delete_object(Bucket=landed.bucket, Key=landed.key, IfMatch=f'"{landed.etag}"')
        except ClientError as error:
            _log("ingest.quarantine_kept_source", file=landed.uri, error=error.response["Error"]["Code"])
        LOG.warning(json.dumps({"event": "ingest.quarantined", "file": landed.uri, "etag": landed.etag, "reason": reason,
                                "window": self.window_id}))
        return "quarantined"

    def _give_back(self, landed: LandedFile, error: Exception) -> str:
        LOG.error(json.dumps({"event": "ingest.file_failed", "file": landed.uri, "error": str(error)[:500], "window": self.window_id}))
        self.claims.release(landed)
        return "failed"

    def _start(self, accepted: list[LandedFile]) -> bool:
        """Copy the accepted files into the run's input folder and start the scheduler on it."""
        run_id = window_run_id(accepted)
        folder = f"runs/{run_id}/input/"
        names = {landed: f"{number:05d}-{PurePosixPath(landed.key).name}" for number, landed in enumerate(sorted(accepted, key=lambda f: f.uri))}
        s3 = self.clients.s3
        try:
            with ThreadPoolExecutor(PARALLEL_FILES) as pool:
                list(pool.map(lambda landed: s3.copy_object(
                    Bucket=self.settings.work_bucket, Key=folder + names[landed],
                    CopySource={"Bucket": landed.bucket, "Key": landed.key}, CopySourceIfMatch=f'"{landed.etag}"'), accepted))
            sources = {name: {"file": landed.uri, "etag": landed.etag, "size": landed.size} for landed, name in names.items()}
            s3.put_object(Bucket=self.settings.work_bucket, Key=folder + "_sources.json",
                          Body=json.dumps(dict(sorted(sources.items())), indent=2).encode())
            payload = {"run_id": run_id, "input": f"s3://{self.settings.work_bucket}/{folder}", "consent": self.settings.consent_uri}
            try:
                self.clients.sfn.start_execution(stateMachineArn=self.settings.scheduler_arn, name=run_id, input=json.dumps(payload))
                outcome = "started"
            except ClientError as error:
                if error.response["Error"]["Code"] != "ExecutionAlreadyExists":
                    raise
                outcome = "duplicate"
        except Exception as error:   # noqa: BLE001 - give every file back; the messages are retried
            LOG.error(json.dumps({"event": "ingest.window_failed", "run_id": run_id, "error": str(error)[:500], "window": self.window_id}))
            for landed in accepted:
                self.claims.release(landed)
            return False
        for landed in accepted:
            self.claims.settle(landed, "started", run_id=run_id)
        _log("ingest.window", outcome=outcome, run_id=run_id, files=len(accepted), window=self.window_id)
        return True


def gather_window(messages: list[dict], settings: WindowSettings, clients: AwsClients | None = None) -> dict:
    """Judge and start one window of SQS messages; the Lambda batch response lists messages to retry."""
    return Window(settings, clients or AwsClients.default()).gather(messages)


def handler(event: dict, context: object) -> dict:
    """Lambda entry point, configured by the environment (WindowSettings.from_environment)."""
    return gather_window(event["Records"], WindowSettings.from_environment())
