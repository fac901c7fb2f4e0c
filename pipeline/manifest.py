"""The parts of `manifest.json` that describe what a prepare run produced."""
from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from audience_relay.pipeline.accounting import ID_TYPE_NOT_ACCEPTED, MemberStat, SegmentStat, destination_accounting
from audience_relay.transforms.delta import REMOVE, REMOVE_HELD, RETAINED, UNCHANGED
from audience_relay.transforms.schemas import BATCHED

CHECKSUM_RULE = "sha256 of the batch's `id_type:match_key` lines, sorted, joined with \\n"
OPS = ("add", "remove")


def batch_list(spark: SparkSession, batches_dir: str, run_id: str, max_sizes: dict[str, int]) -> list[dict]:
    """Read the written batches back: per batch its size, file and content checksum.

    Reading back rather than trusting the plan also proves the invariants delivery relies on:
    no batch above its destination's maximum, every batch within one file.
    """
    lines = F.array_sort(F.collect_list(F.concat_ws(":", "id_type", "match_key")))
    stats = (
        spark.read.schema(BATCHED)
        .option("basePath", batches_dir)
        .parquet(batches_dir)
        .withColumn("file", F.input_file_name())
        .groupBy("destination_id", "audience_id", "op", "batch_number")
        .agg(
            F.count(F.lit(1)).alias("ids"),
            F.sum("source_rows").alias("rows"),
            F.min("file").alias("file"),
            F.max("file").alias("last_file"),  # differs from `file` when a batch spans files
            F.sha2(F.concat_ws("\n", lines), 256).alias("checksum"),
        )
        .collect()
    )
    marker = f"/runs/{run_id}/"
    batches = []
    for row in sorted(stats, key=lambda r: (r.destination_id, r.audience_id, r.op, r.batch_number)):
        held = row.op == REMOVE_HELD
        name = f"{row.destination_id}/{row.audience_id}/{row.op}/{row.batch_number}"
        if row.ids > max_sizes[row.destination_id] or row.file != row.last_file:
            where = "in one file" if row.file == row.last_file else "across several files"
            raise RuntimeError(f"batch {name} has {row.ids} ids {where}; expected at most {max_sizes[row.destination_id]} in one file")
        batches.append(
            {
                "destination_id": row.destination_id,
                "audience_id": row.audience_id,
                # A held removal is a `remove` (so it is sent as one) marked held: sent once approved.
                "op": REMOVE if held else row.op,
                **({"held": True} if held else {}),
                "batch_number": row.batch_number,
                "ids": row.ids,
                "rows": row.rows,
                "checksum": row.checksum,
                "file": row.file.split(marker, 1)[-1],
            }
        )
    return batches


def rejected_by_reason(segment_stats: list[SegmentStat], accepted_anywhere: list[str]) -> dict[str, int]:
    """Rows unusable for every destination, by reason (an unaccepted id type is one)."""
    reasons: dict[str, int] = {}
    for stat in segment_stats:
        reason = stat.reject_reason or (ID_TYPE_NOT_ACCEPTED if stat.id_type not in accepted_anywhere else None)
        if reason:
            reasons[reason] = reasons.get(reason, 0) + stat.rows
    return dict(sorted(reasons.items()))


def destination_report(destination, segment_stats: list[SegmentStat], member_stats: list[MemberStat], consent_filtered: int,
                       batches: list[dict], baseline_run_id: str | None) -> dict:
    """One destination's section: accounting, per-audience member and batch counts."""
    accounting = destination_accounting(
        destination.accepted_id_types,
        destination.mapped_segments,
        segment_stats,
        member_stats,
        consent_filtered,
    )
    own_batches = [b for b in batches if b["destination_id"] == destination.id]
    audiences = {}
    for audience_id in sorted({s.audience_id for s in member_stats} | set(destination.audiences)):
        audiences[audience_id] = {
            "members": {s.status: s.members for s in member_stats if s.audience_id == audience_id},
            "batches": {op: sum(1 for b in own_batches if b["audience_id"] == audience_id and b["op"] == op) for op in OPS},
        }
    return {
        "kind": destination.kind,
        "profile": destination.profile,
        "sync_mode": destination.sync_mode,
        "max_batch_size": destination.batch_size,
        "baseline_run_id": baseline_run_id,
        "accounting": accounting,
        "audiences": audiences,
        "removals_held": removals_held(destination, audiences, own_batches),
        "batches": len(own_batches),
    }


def removals_held(destination, audiences: dict[str, dict], own_batches: list[dict]) -> dict[str, dict]:
    """Per audience whose removals the guard held: the numbers it compared, and the held batches."""
    held = {}
    for audience_id, section in audiences.items():
        members = section["members"]
        if members.get(REMOVE_HELD):
            held[audience_id] = {
                "removes": members[REMOVE_HELD],
                "committed_members": sum(members.get(status, 0) for status in (UNCHANGED, RETAINED, REMOVE, REMOVE_HELD)),
                "max_remove_fraction": destination.max_remove_fraction,
                "max_removes": destination.guards.max_removes,
                "batches": sum(1 for b in own_batches if b["audience_id"] == audience_id and b.get("held")),
            }
    return held
