"""`audience-relay feedback`: what each destination says it holds, next to what the run sent it.

After delivery each destination is asked for its audience report (pipeline/feedback_collect.py,
one partial result per destination). A PySpark step (this module; the Glue job `feedback` in
AWS, `--ask none`) consolidates the parts
with the ids each audience should hold after the run (the manifest's adds and unchanged) into
the feedback table `runs/<run>/feedback/table/` (Parquet): per destination and audience, ids
sent, size reported, match rate, and whether it is below the destination's
`guards.min_match_rate`. `report` shows it next to the accounting.
"""
from __future__ import annotations

import argparse
import json
import sys

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from pipeline import storage
from pipeline.config import DEFAULT_CONFIG, Config, load_config
from pipeline.feedback_collect import FeedbackError, FeedbackIncomplete, collect, part_path, reporting_destinations
from pipeline.paths import RUN_ID
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
    parts = [json.loads(text) for text in (storage.read_text(part_path(out, run_id, d.id)) for d in reporting_destinations(config))
             if text]
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
    parser.add_argument("--ask", choices=["missing", "all", "none"], default="missing",
                        help="which destinations to ask: those without an answer kept (default), all again (after a later "
                             "delivery), none (consolidate only: the feedback machine's Glue job, after its Map asked them)")
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
    found, missing = None, None
    try:
        if args.ask != "none":
            found = collect(config, args.out, args.run, endpoints, refresh=args.ask == "all")
    except FeedbackIncomplete as error:
        missing = str(error)
    from pipeline.session import build_session

    # What did answer is consolidated either way; the others show as not reported.
    table = consolidate(build_session("audience-relay-feedback", args.master), config, args.out, args.run)
    print(json.dumps({"asked": found, "table": table}))
    if missing:
        print(f"audience-relay feedback: {missing}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for spark-submit and Glue (the feedback machine's Consolidate job)."""
    from pipeline.entry import run_job

    return run_job("feedback", __doc__, add_arguments, run_feedback, argv)


if __name__ == "__main__":
    sys.exit(main())
