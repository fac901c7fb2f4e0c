"""`audience-relay ingest`: run windows from an ingest queue here, as the ingest Lambda runs them in AWS.

For a stack without the Lambda (EMR users, a local moto server): gather a window from the
queue (`orchestration.local.window_poller`), judge and start it (`orchestration.ingest_window`),
and repeat until the queue is empty (or once, with `--once`). Window size and file checks come
from the config's `ingest` section.
"""
from __future__ import annotations

import argparse
import json
import os

from audience_relay.connectors.aws import sqs
from audience_relay.connectors.catalog.source import CatalogSource
from audience_relay.orchestration.ingest_window import AwsClients, WindowSettings, gather_window
from audience_relay.orchestration.local.window_poller import run_window
from audience_relay.pipeline.config import DEFAULT_CONFIG, load_config
from audience_relay.pipeline.errors import UsageError

DEFAULT_STALE_SECONDS = 900   # the ingest Lambda's longest run (its timeout) with room


class IngestModeError(UsageError):
    """The config does not ingest windows of files (windows need its `ingest.mode: window` checks)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue-url", "--queue_url", required=True, help="the ingest queue S3 notifies of landed files")
    parser.add_argument("--scheduler-arn", "--scheduler_arn", required=True, help="the scheduler state machine a window starts")
    parser.add_argument("--consent", required=True, help="the consent folder every run reads (s3://...)")
    parser.add_argument("--state-table", "--state_table", required=True, help="DynamoDB state table (file claims live there)")
    parser.add_argument("--work-bucket", "--work_bucket", required=True, help="bucket of the runs: a window's files go to runs/<run_id>/input/")
    parser.add_argument("--dead-letter-queue-url", "--dead_letter_queue_url", required=True,
                        help="where a quarantined file is reported with its reason")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="destinations YAML whose `ingest` section sizes windows")
    parser.add_argument("--claim-stale-seconds", "--claim_stale_seconds", type=int, default=DEFAULT_STALE_SECONDS,
                        help="a claim this old that was never settled may be taken over")
    parser.add_argument("--catalog-dsn", "--catalog_dsn", default=os.environ.get("CATALOG_DSN"),
                        help="record each window's runs and files in this run catalog (default: CATALOG_DSN; none: not recorded)")
    parser.add_argument("--idle-seconds", "--idle_seconds", type=int, default=20, choices=range(0, 21), metavar="0-20",
                        help="the queue is empty once a long poll this long brings nothing (default 20, SQS's longest)")
    parser.add_argument("--once", action="store_true", help="run one window, then stop (default: until the queue is empty)")


def run_ingest(args: argparse.Namespace) -> int:
    ingest = load_config(args.config).ingest
    if ingest.mode != "window":
        # Only a window-mode config is checked for upsert destinations: a window of files run
        # against a mirror destination would remove everyone missing from the window.
        raise IngestModeError(f"{args.config}: ingest.mode is {ingest.mode!r}; windows of files need ingest.mode: window "
                              "(which requires sync_mode: upsert for every destination)")
    settings = WindowSettings(
        scheduler_arn=args.scheduler_arn, consent_uri=args.consent, state_table=args.state_table, work_bucket=args.work_bucket,
        quarantine_prefix=ingest.quarantine_prefix, dead_letter_queue_url=args.dead_letter_queue_url,
        max_file_bytes=ingest.max_file_bytes, stale_seconds=args.claim_stale_seconds,
        catalog=CatalogSource(dsn=args.catalog_dsn) if args.catalog_dsn else None,
    )
    clients = AwsClients.default()
    windows = 0
    while result := run_window(sqs.client(), args.queue_url, ingest.window_files, ingest.window_seconds,
                               lambda records: gather_window(records, settings, clients), args.idle_seconds):
        windows += 1
        print(json.dumps({"window": windows, "messages": result.messages, "retried": result.retried}))
        if args.once:
            break
    print(json.dumps({"windows": windows}))
    return 0
