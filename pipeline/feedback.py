"""The feedback table: what each destination says it holds, next to what the run sent it.

After delivery each destination is asked for its audience report (pipeline/feedback_collect.py,
one partial result per destination). This PySpark step (the job script jobs/feedback.py; the
Glue job `feedback` in AWS, `--ask none`) consolidates the parts with the ids each audience should hold after the run (the manifest's adds and unchanged) into
the feedback table `runs/<run>/feedback/table/` (Parquet): per destination and audience, ids
sent, size reported, match rate, and whether it is below the destination's
`guards.min_match_rate`. `report` shows it next to the accounting.
"""
from __future__ import annotations

import json

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from audience_relay.pipeline import storage
from audience_relay.pipeline.config import Config
from audience_relay.pipeline.feedback_collect import FeedbackError, part_path, reporting_destinations
from audience_relay.transforms.delta import SNAPSHOT_STATUSES   # what an audience holds after the run: added, unchanged, retained

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
