"""A prepared run of synthetic members, written by the prepare library, for the deliver benchmark.

Every active destination gets the same `ids` hashed emails as adds to each of its audiences;
batches, files, checksums and the manifest's accounting come from the same functions
`prepare` uses, so `deliver` cannot tell this run from a prepared one.
"""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from audience_relay.pipeline import snapshots, storage
from audience_relay.pipeline.accounting import MemberStat, SegmentStat
from audience_relay.pipeline.config import Config
from audience_relay.pipeline.manifest import CHECKSUM_RULE, batch_list, destination_report
from audience_relay.pipeline.prepare import destination_rules, write_batches
from audience_relay.transforms.batching import DEFAULT_SUB_BUCKETS
from audience_relay.transforms.delta import ADD
from audience_relay.transforms.schemas import CONSENT_SIGNALS, SNAPSHOT


def write_run(spark: SparkSession, config: Config, out: str, run_id: str, segment: str, ids: int) -> dict:
    """Write `<out>/runs/<run_id>/` (batches, candidate snapshot and manifest); every audience must map `segment` only."""
    destinations = config.active_destinations
    targets = spark.createDataFrame(
        [(d.id, audience) for d in destinations for audience in d.audiences], "destination_id string, audience_id string"
    )
    keys = spark.range(ids).select(F.sha2(F.concat(F.lit("bench-"), F.col("id").cast("string")), 256).alias("match_key"))
    classified = targets.crossJoin(keys).select(
        "destination_id", "audience_id", F.lit("email").alias("id_type"), "match_key",
        *[F.lit(None).cast("string").alias(signal) for signal in CONSENT_SIGNALS],
        F.lit(1).cast("long").alias("source_rows"), F.lit(ADD).alias("status"),
    )
    run_dir = storage.join(str(out), "runs", run_id)
    batches_dir = storage.join(run_dir, "batches")
    write_batches(classified, destination_rules(spark, config), DEFAULT_SUB_BUCKETS, batches_dir)
    # The candidate snapshot, as prepare writes it: a delivered run's commit copies it.
    classified.select(SNAPSHOT.fieldNames()).write.mode("overwrite").partitionBy("destination_id").parquet(
        snapshots.run_snapshot_path(str(out), run_id))
    batches = batch_list(spark, batches_dir, run_id, {d.id: d.batch_size for d in destinations})
    segment_stats = [SegmentStat("email", segment, None, ids)]
    report = {
        d.id: destination_report(d, segment_stats, [MemberStat(d.id, a, ADD, ids, ids) for a in d.audiences], 0, batches, None)
        for d in destinations
    }
    manifest = {
        "run_id": run_id,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": {"synthetic": f"{ids} hashed emails per audience"},
        "input_rows": ids,
        "destinations": report,
        "batch_checksum": CHECKSUM_RULE,
        "batches": batches,
        "snapshot": {"path": "snapshot/", "members": ids * len(destinations), "committed": False},
    }
    storage.write_text(storage.join(run_dir, "manifest.json"), json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.synthetic_run`: a fresh process, so a caller's own Spark session is left alone."""
    from audience_relay.cli.main import record_count
    from audience_relay.pipeline.config import load_config
    from audience_relay.pipeline.session import build_session

    parser = argparse.ArgumentParser(prog="python -m bench.synthetic_run", description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--segment", required=True)
    parser.add_argument("--ids", type=record_count, required=True)
    args = parser.parse_args(argv)
    spark = build_session("bench-synthetic-run", "local[2]")
    write_run(spark, load_config(args.config), args.out, args.run_id, args.segment, args.ids)
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
