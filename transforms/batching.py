"""Deterministic delivery batches and their files, with one shuffle and no global sort.

A batch is one request: at most the destination's `max_batch_size` ids of one audience and op.
Ranking all members of an audience in one window would put a whole audience (often most of
the data) in one task. Instead each member falls into one of `sub_buckets` hash buckets of its
(destination, audience, op) group, and consecutive buckets are gathered into files of about
`file_rows` members, using the bucket sizes (a small aggregate). One shuffle brings each file's
members together; they are ranked inside the file, and each file's batches are numbered after
the batches of the files before it. So every batch lies in one planned file, every batch is
full except the last of its planned file, and the result depends only on the members, not on
partitioning. A task holds whole planned files; when AQE merges small shuffle partitions, one
task (one written file) may hold several of them.
"""
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from audience_relay.transforms.delta import BATCHED_STATUSES
from audience_relay.transforms.schemas import CONSENT_SIGNALS

GROUP = ["destination_id", "audience_id", "op"]
DEFAULT_SUB_BUCKETS = 512
DEFAULT_FILE_ROWS = 1_000_000  # about 70 MB of hex keys: large files, still one task each


def deliverable_changes(classified: DataFrame, sub_buckets: int) -> DataFrame:
    """Adds and removes (held ones too), one row per member and op, with the member's hash sub-bucket."""
    return classified.filter(F.col("status").isin(*BATCHED_STATUSES)).select(
        "destination_id",
        "audience_id",
        F.col("status").alias("op"),
        "id_type",
        "match_key",
        "source_rows",
        *CONSENT_SIGNALS,
        F.pmod(F.xxhash64("id_type", "match_key"), F.lit(sub_buckets)).alias("sub_bucket"),
    )


def file_plan(changes: DataFrame, rules: DataFrame, file_rows: int) -> DataFrame:
    """Per (group, sub_bucket): its file within the group and the number of that file's first batch.

    Files hold whole batches: about `file_rows` members, rounded to a multiple of the batch size.
    Windows over the bucket sizes only (no self-join), so the changes are aggregated once.
    """
    in_group = Window.partitionBy(*GROUP).orderBy("sub_bucket")
    before = in_group.rowsBetween(Window.unboundedPreceding, -1)
    chunk = F.greatest(F.lit(1), F.floor(F.lit(file_rows) / F.col("max_batch_size"))) * F.col("max_batch_size")
    in_file = Window.partitionBy(*GROUP, "file_in_group")
    # Counted on the file's first bucket only, so a running sum adds each file's batches once.
    file_batches_once = F.when(F.row_number().over(in_file.orderBy("sub_bucket")) == 1, F.col("file_batches")).otherwise(0)
    return (
        changes.groupBy(*GROUP, "sub_bucket")
        .agg(F.count(F.lit(1)).alias("bucket_rows"))
        .join(F.broadcast(rules.select("destination_id", "max_batch_size")), on="destination_id", how="inner")
        .withColumn("file_in_group", F.floor(F.coalesce(F.sum("bucket_rows").over(before), F.lit(0)) / chunk))
        .withColumn("file_batches", F.ceil(F.sum("bucket_rows").over(in_file) / F.col("max_batch_size")))
        .withColumn("file_batches_once", file_batches_once)
        .select(
            *GROUP,
            "sub_bucket",
            "file_in_group",
            (F.sum("file_batches_once").over(in_group.rowsBetween(Window.unboundedPreceding, 0)) - F.col("file_batches")).alias("first_batch"),
            "max_batch_size",
        )
    )


def assign_batches(
    classified: DataFrame, rules: DataFrame, sub_buckets: int = DEFAULT_SUB_BUCKETS, file_rows: int = DEFAULT_FILE_ROWS
) -> DataFrame:
    """Batch the adds and removes of classified members; returns the `BATCHED` schema.

    The result comes with each planned file's rows in one partition, sorted by batch, so a
    partitioned write (`partitionBy(destination_id, audience_id, op)`) writes whole batches
    per file with no further shuffle.
    """
    if sub_buckets < 1:
        raise ValueError(f"sub_buckets must be positive, got {sub_buckets}")
    if file_rows < 1:
        raise ValueError(f"file_rows must be positive, got {file_rows}")
    changes = deliverable_changes(classified, sub_buckets)
    placed = changes.join(F.broadcast(file_plan(changes, rules, file_rows)), on=[*GROUP, "sub_bucket"], how="inner")
    rank_in_file = F.row_number().over(
        Window.partitionBy(*GROUP, "file_in_group").orderBy("sub_bucket", "id_type", "match_key")
    )
    batch_number = F.col("first_batch") + F.floor((rank_in_file - 1) / F.col("max_batch_size"))
    return placed.select(*GROUP, batch_number.cast("int").alias("batch_number"), "id_type", "match_key", "source_rows",
                         *CONSENT_SIGNALS)
