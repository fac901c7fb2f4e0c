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
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath

from botocore.exceptions import ClientError

from audience_relay.connectors.aws import clients, s3, sqs, stepfunctions
from audience_relay.connectors.catalog.source import CatalogSource
from audience_relay.orchestration.file_checks import Admitted, LandedFile, Rejected, Superseded, check_file
from audience_relay.orchestration.file_claims import Claim, ClaimLost, FileClaims, Found
from audience_relay.orchestration.ingest import COMPLETION_MARKER, parse_s3_event

LOG = logging.getLogger("audience_relay.ingest")
PARALLEL_FILES = 16   # S3 calls in flight per window (checks, copies)
DEADLINE_MARGIN_SECONDS = 30   # kept for copying, starting and settling after the last check


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
    catalog: CatalogSource | None = None   # the run catalog (PostgreSQL): each window's runs and files

    @classmethod
    def from_environment(cls, environ: dict[str, str] = os.environ) -> WindowSettings:
        return cls(
            scheduler_arn=environ["SCHEDULER_ARN"], consent_uri=environ["CONSENT_URI"], state_table=environ["STATE_TABLE"],
            work_bucket=environ["WORK_BUCKET"], quarantine_prefix=environ["QUARANTINE_PREFIX"],
            dead_letter_queue_url=environ["DEAD_LETTER_QUEUE_URL"], max_file_bytes=int(environ["MAX_FILE_BYTES"]),
            stale_seconds=int(environ["CLAIM_STALE_SECONDS"]), catalog=CatalogSource.from_environment(environ),
        )


@dataclass
class AwsClients:
    s3: object
    sqs: object
    sfn: object
    dynamodb: object   # a boto3 DynamoDB resource

    @classmethod
    def default(cls) -> AwsClients:
        return cls(s3.client(), sqs.client(), stepfunctions.client(), clients.resource("dynamodb"))


@dataclass(frozen=True)
class Quarantined:
    reason: str


def landed_files(message_body: str) -> list[LandedFile]:
    """The created objects one SQS message names; S3's test event names none. ValueError for a bad body."""
    return [LandedFile(bucket, key, str(obj.get("eTag", "")).strip('"'), int(obj.get("size", 0)), event_time)
            for bucket, key, obj, event_time in parse_s3_event(message_body)]


def window_run_id(files: list[LandedFile]) -> str:
    """`w-<day of the earliest event>-<hash of the files' versions>`: the same files, the same run."""
    digest = hashlib.sha256("\n".join(sorted(f"{f.uri}@{f.etag}" for f in files)).encode()).hexdigest()[:24]
    return f"w-{min(f.event_time for f in files)[:10].replace('-', '')}-{digest}"


def _log(event: str, level: int = logging.INFO, **fields) -> None:
    LOG.log(level, json.dumps({"event": event, **fields}))


def _failure(error: Exception) -> str:
    """What a log line says of an error: its text, cut (S3 and SQS errors quote keys, not contents)."""
    return str(error)[:500]


class Window:
    """One invocation's messages, judged and started as runs (one per file shape, usually one).

    Every claim this window takes is settled (`started`, `quarantined`) or given back before it
    returns, whatever fails; a message is reported for retry when one of its files was given back.
    Claims are read and written from this thread only; S3 work runs in a pool.
    """

    def __init__(self, settings: WindowSettings, clients: AwsClients, deadline: float | None = None) -> None:
        self.settings, self.clients, self.deadline = settings, clients, deadline
        self.window_id = uuid.uuid4().hex
        self.claims = FileClaims(settings.state_table, self.window_id, settings.stale_seconds, clients.dynamodb)
        self.failed_messages: set[str] = set()
        self.carriers: dict[LandedFile, list[str]] = defaultdict(list)   # file version -> the messages naming it
        self.settled: set[LandedFile] = set()   # claims settled or given back
        self.catalog_runs: dict[str, object] = {}   # run id -> RunRecord, when the catalog is configured
        self.catalog_files: dict[LandedFile, object] = {}   # -> FileRecord
        self.catalog = None
        if settings.catalog:
            # Here, before any claim: without psycopg (an install without the `catalog` extra)
            # the window fails whole and nothing is half started.
            from audience_relay.connectors.catalog import postgres

            self.catalog = postgres

    def gather(self, messages: list[dict]) -> dict:
        for message in messages:
            try:
                for landed in landed_files(message["body"]):
                    self.carriers[landed].append(message["messageId"])
            except (ValueError, KeyError) as error:
                # Retried by SQS, then moved to the dead-letter queue with the message intact.
                _log("ingest.bad_message", logging.ERROR, message_id=message["messageId"], error=_failure(error))
                self.failed_messages.add(message["messageId"])
        ours = [landed for landed in self.carriers if self._claim(landed)]
        try:
            with ThreadPoolExecutor(PARALLEL_FILES) as pool:
                verdicts = list(pool.map(self._judge, ours))
            shapes: dict[Admitted, list[LandedFile]] = defaultdict(list)
            for landed, verdict in zip(ours, verdicts):
                if isinstance(verdict, Admitted):
                    shapes[verdict].append(landed)
                elif isinstance(verdict, Quarantined):
                    self._settle(landed, "quarantined", reason=verdict.reason)
                    self._catalogued(landed, {"state": "quarantined", "reason": verdict.reason, "window": self.window_id})
                else:   # superseded, or not judged: given back
                    self._give_back(landed, retry=verdict != "superseded")
            for files in shapes.values():
                self._start(files)
            self._record_in_catalog()
        except Exception as error:   # noqa: BLE001 - whatever failed, no claim of ours stays behind
            _log("ingest.window_failed", logging.ERROR, error=_failure(error), window=self.window_id)
            for landed in ours:
                if landed not in self.settled:
                    self._give_back(landed, retry=True)
        return {"batchItemFailures": [{"itemIdentifier": m} for m in sorted(self.failed_messages)]}

    def _claim(self, landed: LandedFile) -> bool:
        """True when this window judges the file; otherwise its messages are acknowledged or retried."""
        try:
            found = self.claims.claim(landed)
            if found.claim is Claim.STARTING:   # a window died starting a run with it: did the run start?
                if self._execution_exists(found.run_id):
                    found = Found(Claim.DONE, found.run_id, self.claims.confirm_started(landed, found.run_id))
                elif self.claims.take_over(landed, found.run_id):
                    found = Found(Claim.OURS)
                else:
                    found = Found(Claim.HELD)
        except Exception as error:   # noqa: BLE001 - a failed call: retry the message
            _log("ingest.claim_failed", logging.ERROR, file=landed.uri, error=_failure(error))
            found = Found(Claim.HELD)
        if found.claim is Claim.HELD or (found.claim is Claim.DONE and found.settled is None):
            self.failed_messages.update(self.carriers[landed])
        elif found.claim is Claim.DONE:
            self._catalogued(landed, found.settled)   # recorded again: a failed catalog write is retried so
        _log("ingest.file", file=landed.uri, etag=landed.etag, claim=found.claim.value, window=self.window_id)
        return found.claim is Claim.OURS

    def _judge(self, landed: LandedFile) -> Admitted | Quarantined | str:
        """Admitted, Quarantined, or superseded | failed. Runs in the pool: S3 and SQS only."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            return "failed"   # out of time: judged by the retry
        try:
            return check_file(self.clients.s3, landed, self.settings.max_file_bytes, self.deadline)
        except Superseded as why:
            _log("ingest.superseded", file=landed.uri, etag=landed.etag, reason=str(why), window=self.window_id)
            return "superseded"
        except Rejected as why:
            return self._quarantine(landed, str(why))
        except Exception as error:   # noqa: BLE001 - OutOfTime or a failed call: the retry judges it again
            _log("ingest.file_failed", logging.ERROR, file=landed.uri, error=_failure(error), window=self.window_id)
            return "failed"

    def _quarantine(self, landed: LandedFile, reason: str) -> Quarantined | str:
        """Move the file to `<quarantine prefix><etag>/<key>` and report it on the dead-letter queue."""
        target = f"{self.settings.quarantine_prefix}{landed.etag}/{landed.key}"
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
        except Exception as error:   # noqa: BLE001 - nothing is settled: the retry quarantines it
            _log("ingest.file_failed", logging.ERROR, file=landed.uri, error=_failure(error), window=self.window_id)
            return "failed"
        try:   # last, and only this version: a newer one under the same key is left alone
            self.clients.s3.delete_object(Bucket=landed.bucket, Key=landed.key, IfMatch=f'"{landed.etag}"')
        except Exception as error:   # noqa: BLE001 - the copy and the report are what count
            _log("ingest.quarantine_kept_source", file=landed.uri, error=str(error)[:200])
        _log("ingest.quarantined", logging.WARNING, file=landed.uri, etag=landed.etag, reason=reason, window=self.window_id)
        return Quarantined(reason)

    def _settle(self, landed: LandedFile, state: str, **details: str) -> None:
        try:
            self.claims.settle(landed, state, **details)
        except ClaimLost:   # another window took it over; that window settles it
            pass
        self.settled.add(landed)

    def _give_back(self, landed: LandedFile, retry: bool) -> None:
        """Release the claim (best effort: a claim left behind is taken over once stale)."""
        try:
            self.claims.release(landed)
        except Exception as error:   # noqa: BLE001
            _log("ingest.release_failed", logging.ERROR, file=landed.uri, error=_failure(error))
        self.settled.add(landed)
        if retry:
            self.failed_messages.update(self.carriers[landed])

    def _give_back_all(self, landed_files: list[LandedFile]) -> None:
        for landed in landed_files:
            self._give_back(landed, retry=True)

    def _catalogued(self, landed: LandedFile, claim: dict) -> None:
        """Keep the file's outcome for the run catalog (written once, at the window's end)."""
        if self.catalog is None:
            return
        run_id = claim.get("run_id") if claim["state"] == "started" else None
        if run_id:
            self.catalog_runs[run_id] = self.catalog.RunRecord(run_id, "window", self._run_input(run_id), claim["window"])
        self.catalog_files[landed] = self.catalog.FileRecord(
            landed.uri, landed.etag, landed.size, "accepted" if run_id else "quarantined", run_id,
            None if run_id else claim.get("reason", ""), claim["window"])

    def _record_in_catalog(self) -> None:
        """One connection, one INSERT per table, for the whole window. Idempotent: on failure the
        window's messages are retried, find their files done, and record them again."""
        if not self.catalog_files:
            return
        try:
            dsn = self.settings.catalog.resolve()
            self.catalog.RunCatalog(dsn).record_window(list(self.catalog_runs.values()), list(self.catalog_files.values()))
        except Exception as error:   # noqa: BLE001 - the runs have started; only the record is retried
            _log("ingest.catalog_failed", logging.ERROR, files=len(self.catalog_files), error=_failure(error), window=self.window_id)
            for landed in self.catalog_files:
                self.failed_messages.update(self.carriers[landed])
            return
        _log("ingest.catalogued", runs=len(self.catalog_runs), files=len(self.catalog_files), window=self.window_id)

    def _run_input(self, run_id: str) -> str:
        return f"s3://{self.settings.work_bucket}/runs/{run_id}/input/"

    def _execution_arn(self, run_id: str) -> str:
        machine = self.settings.scheduler_arn
        return machine.replace(":stateMachine:", ":execution:", 1) + ":" + run_id

    def _execution_exists(self, run_id: str) -> bool:
        try:
            self.clients.sfn.describe_execution(executionArn=self._execution_arn(run_id))
            return True
        except ClientError as error:
            if error.response["Error"]["Code"] == "ExecutionDoesNotExist":
                return False
            raise

    def _start(self, accepted: list[LandedFile]) -> None:
        """Record the run in the claims (`starting`), copy the files into its input folder pinned to
        the checked ETags, start the scheduler on it, then mark the claims `started`."""
        run_id = window_run_id(accepted)
        try:
            for landed in accepted:
                self.claims.settle(landed, "starting", run_id=run_id)
        except ClaimLost:   # one went stale and was taken over: give the rest back, retry them
            return self._give_back_all(accepted)
        if self.deadline is not None and time.monotonic() > self.deadline:
            return self._give_back_all(accepted)
        try:
            outcome = self._copy_and_start(run_id, accepted)
        except Exception as error:   # noqa: BLE001 - did the execution start anyway (a lost answer)?
            _log("ingest.start_failed", logging.ERROR, run_id=run_id, error=_failure(error), window=self.window_id)
            try:
                started = self._execution_exists(run_id)
            except Exception:   # noqa: BLE001 - unknown: leave the claims `starting`; whoever finds them checks
                self.settled.update(accepted)
                for landed in accepted:
                    self.failed_messages.update(self.carriers[landed])
                return
            if not started:
                return self._give_back_all(accepted)
            outcome = "started"
        for landed in accepted:
            try:
                self._settle(landed, "started", run_id=run_id)
            except Exception as error:   # noqa: BLE001 - `starting` with a started run is found as done
                _log("ingest.settle_failed", logging.ERROR, file=landed.uri, error=_failure(error))
                self.settled.add(landed)
            self._catalogued(landed, {"state": "started", "run_id": run_id, "window": self.window_id})
        _log("ingest.window", outcome=outcome, run_id=run_id, files=len(accepted), window=self.window_id)

    def _copy_and_start(self, run_id: str, accepted: list[LandedFile]) -> str:
        folder = f"runs/{run_id}/input/"
        names = {landed: f"{number:05d}-{PurePosixPath(landed.key).name}"
                 for number, landed in enumerate(sorted(accepted, key=lambda f: f.uri))}
        s3_client = self.clients.s3
        with ThreadPoolExecutor(PARALLEL_FILES) as pool:
            list(pool.map(lambda landed: s3_client.copy_object(
                Bucket=self.settings.work_bucket, Key=folder + names[landed],
                CopySource={"Bucket": landed.bucket, "Key": landed.key}, CopySourceIfMatch=f'"{landed.etag}"'), accepted))
        sources = {name: {"file": landed.uri, "etag": landed.etag, "size": landed.size} for landed, name in names.items()}
        s3_client.put_object(Bucket=self.settings.work_bucket, Key=folder + "_sources.json",
                             Body=json.dumps(dict(sorted(sources.items())), indent=2).encode())
        s3_client.put_object(Bucket=self.settings.work_bucket, Key=folder + COMPLETION_MARKER, Body=b"")   # the window's files are all there
        payload = {"run_id": run_id, "input": self._run_input(run_id), "consent": self.settings.consent_uri}
        try:
            stepfunctions.start_execution(self.clients.sfn, self.settings.scheduler_arn, run_id, payload)
            return "started"
        except ClientError as error:
            if error.response["Error"]["Code"] != "ExecutionAlreadyExists":
                raise
            return "duplicate"


def gather_window(messages: list[dict], settings: WindowSettings, clients: AwsClients | None = None,
                  deadline: float | None = None) -> dict:
    """Judge and start one window of SQS messages; the Lambda batch response lists messages to retry.
    Past `deadline` (time.monotonic()), files not yet judged are given back for the retry."""
    return Window(settings, clients or AwsClients.default(), deadline).gather(messages)


def handler(event: dict, context) -> dict:
    """Lambda entry point, configured by the environment (WindowSettings.from_environment). Stops
    judging and starting with a margin before the function's timeout, giving the rest back."""
    deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000 - DEADLINE_MARGIN_SECONDS
    return gather_window(event["Records"], WindowSettings.from_environment(), deadline=deadline)
