"""`audience-relay feedback`: what each destination says it holds, next to what the run sent it.

After delivery, each HTTP destination is asked for its own audience report, every page of it
(Meta: custom audiences with their matched-people estimate; Google: Customer Match lists with
their size and match rate). Each destination's answer is written as it comes, a partial result
(`runs/<run>/feedback/parts/<destination>.json`), so one failing destination loses nothing of
the others and a retry asks only for the missing ones. A PySpark step consolidates the parts
with the ids each audience should hold after the run (the manifest's adds and unchanged) into
the feedback table `runs/<run>/feedback/table/` (Parquet): per destination and audience, ids
sent, size reported, match rate, and whether it is below the destination's
`guards.min_match_rate`. `report` shows it next to the accounting.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from jobs import storage
from connectors.secrets import resolve_secret
from jobs.config import DEFAULT_CONFIG, Config, HttpDestination, load_config
from jobs.destinations import build_destination
from jobs.paths import RUN_ID
from transforms.delta import SNAPSHOT_STATUSES   # what an audience holds after the run: added, unchanged, retained

REPORTED = StructType([
    StructField("destination_id", StringType(), False),
    StructField("audience_id", StringType(), False),
    StructField("platform_audience_id", StringType(), False),
    StructField("reported_size", LongType(), True),
    StructField("reported_match_rate", DoubleType(), True),
    StructField("status", StringType(), True),
    StructField("fetched_at", StringType(), False),
])
EXPECTED = StructType([
    StructField("destination_id", StringType(), False),
    StructField("audience_id", StringType(), False),
    StructField("ids_sent", LongType(), False),
    StructField("min_match_rate", DoubleType(), True),
])


class FeedbackError(ValueError):
    """The run cannot be asked about: a bad run id, no destination reports audiences, a destination
    lacks what its report API needs."""


class FeedbackIncomplete(RuntimeError):
    """Some destinations did not answer; the others' parts are kept and consolidated."""


def _parts_dir(out: str, run_id: str) -> str:
    return storage.join(out, "runs", run_id, "feedback", "parts")


def reporting_destinations(config: Config) -> list[HttpDestination]:
    """Active HTTP destinations with an account to report on."""
    return [d for d in config.active_destinations
            if isinstance(d, HttpDestination) and d.connection is not None and d.connection.account_id]


def _report_access(destination: HttpDestination, endpoint: str | None) -> tuple[str | None, dict[str, str]]:
    """Where the destination's report API is, and the headers it needs beyond the bearer token."""
    connection = destination.connection
    if destination.profile != "google_data_manager":
        return endpoint or connection.report_base_url, {}
    if not endpoint and not connection.report_base_url:
        raise FeedbackError(f"destinations.{destination.id}.connection.report_base_url: Google's audience reports come from "
                            "the Google Ads API, not the Data Manager API: set it (https://googleads.googleapis.com/v21)")
    if connection.developer_token is None:
        raise FeedbackError(f"destinations.{destination.id}.connection.developer_token: the Google Ads API needs the "
                            "developer token (env or secret_arn)")
    headers = {"developer-token": resolve_secret(connection.developer_token.env, connection.developer_token.secret_arn)}
    if connection.login_customer_id:
        headers["login-customer-id"] = connection.login_customer_id
    return endpoint or connection.report_base_url, headers


def collect(config: Config, out: str, run_id: str, endpoints: dict[str, str] | None = None, refresh: bool = False) -> dict[str, int]:
    """Ask each reporting destination for its audience report (all pages) and write one part per
    destination; returns destination -> audiences found. A destination with a part already is
    not asked again unless `refresh`. A destination that fails does not stop the others:
    FeedbackIncomplete names them at the end."""
    written, failed = {}, {}
    for destination in reporting_destinations(config):
        part = storage.join(_parts_dir(out, run_id), f"{destination.id}.json")
        if not refresh and storage.read_text(part) is not None:
            continue
        endpoint = (endpoints or {}).get(destination.id)
        report_base, headers = _report_access(destination, endpoint)
        connector = build_destination(destination, endpoint)
        ours = {platform_id: audience for audience, platform_id in destination.connection.audience_ids.items()}
        connector.open()
        try:
            reported = connector.audience_reports(destination.connection.account_id, report_base, headers)
        except Exception as error:   # noqa: BLE001 - a report answer holds counts and ids of audiences, no identifiers
            failed[destination.id] = f"{type(error).__name__}: {str(error)[:200]}"
            continue
        finally:
            connector.close()
        fetched_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        rows = [{"destination_id": destination.id, "audience_id": ours.get(entry.audience, entry.audience),
                 "platform_audience_id": entry.audience, "reported_size": entry.size, "reported_match_rate": entry.match_rate,
                 "status": entry.status, "fetched_at": fetched_at}
                for entry in reported if ours.get(entry.audience, entry.audience) in destination.audiences]
        storage.write_text(part, json.dumps(rows, indent=1) + "\n")
        written[destination.id] = len(rows)
    if failed:
        raise FeedbackIncomplete(f"no audience report from {failed}; asked and kept: {written}")
    return written


def expected_sizes(config: Config, manifest: dict) -> list[tuple]:
    """(destination, audience, ids it should hold after the run, its min_match_rate) per reporting audience."""
    rows = []
    for destination in reporting_destinations(config):
        audiences = manifest["destinations"].get(destination.id, {}).get("audiences", {})
        for audience in destination.audiences:
            members = audiences.get(audience, {}).get("members", {})
            rows.append((destination.id, audience, sum(members.get(status, 0) for status in SNAPSHOT_STATUSES),
                         destination.guards.min_match_rate))
    return rows


def feedback_table(reported: DataFrame, expected: DataFrame, run_id: str) -> DataFrame:
    """Every audience the run expects, with what its destination reported (nulls: not reported).

    The match rate is the API's own where it reports one (Google), else reported size over ids
    sent (Meta's lower bound). `below_threshold` is null without a threshold or a report.
    """
    rate = F.coalesce(F.col("reported_match_rate"),
                      F.when(F.col("ids_sent") > 0, F.col("reported_size") / F.col("ids_sent")))
    return (
        expected.join(reported, ["destination_id", "audience_id"], "left")
        .select(
            F.lit(run_id).alias("run_id"), "destination_id", "audience_id", "platform_audience_id", "ids_sent",
            "reported_size", F.round(rate, 4).alias("match_rate"), "status", "fetched_at", "min_match_rate",
            F.when(F.col("min_match_rate").isNotNull() & rate.isNotNull(), rate < F.col("min_match_rate")).alias("below_threshold"),
        )
    )


def consolidate(spark: SparkSession, config: Config, out: str, run_id: str) -> str:
    """The parts and the manifest into `runs/<run>/feedback/table/`; returns its path."""
    run_dir = storage.join(out, "runs", run_id)
    manifest = json.loads(storage.read_text(storage.join(run_dir, "manifest.json")) or "null") or {}
    if not manifest:
        raise FeedbackError(f"{run_dir}/manifest.json not found: prepare the run first")
    parts = [json.loads(text) for text in (storage.read_text(storage.join(_parts_dir(out, run_id), f"{d.id}.json"))
                                            for d in reporting_destinations(config)) if text]
    reported = spark.createDataFrame([tuple(row[f.name] for f in REPORTED.fields) for part in parts for row in part], REPORTED)
    expected = spark.createDataFrame(expected_sizes(config, manifest), EXPECTED)
    table = storage.join(run_dir, "feedback", "table")
    feedback_table(reported, expected, run_id).coalesce(1).write.mode("overwrite").parquet(table)
    return table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="the run layout's root")
    parser.add_argument("--run", required=True, help="run id")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="destinations YAML")
    parser.add_argument("--endpoint", action="append", default=[], metavar="D=URL",
                        help="ask destination D at URL instead (an emulator); repeatable")
    parser.add_argument("--refresh", action="store_true", help="ask every destination again, also those with an answer kept")
    parser.add_argument("--master", help="Spark master (default local[*])")


def run_feedback(args: argparse.Namespace) -> int:
    if not RUN_ID.fullmatch(args.run):
        raise FeedbackError(f"run id {args.run!r} must match {RUN_ID.pattern}")
    config = load_config(args.config)
    if not reporting_destinations(config):
        raise FeedbackError(f"{args.config}: no active HTTP destination has connection.account_id to report on")
    if any("=" not in item for item in args.endpoint):
        raise FeedbackError(f"--endpoint takes DESTINATION=URL, got {args.endpoint}")
    endpoints = dict(item.split("=", 1) for item in args.endpoint)
    try:
        found, missing = collect(config, args.out, args.run, endpoints, args.refresh), None
    except FeedbackIncomplete as error:
        found, missing = None, str(error)
    from jobs.session import build_session

    # What did answer is consolidated either way; the others show as not reported.
    table = consolidate(build_session("audience-relay-feedback", args.master), config, args.out, args.run)
    print(json.dumps({"asked": found, "table": table}))
    if missing:
        print(f"audience-relay feedback: {missing}", file=sys.stderr)
        return 1
    return 0
