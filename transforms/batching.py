"""Deterministic delivery batches without a global sort.

A batch is one request: at most the destination's `max_batch_size` ids of one audience and op.
Ranking all members of an audience in one window would put a whole audience (often most of
the data) in one task. Instead each member falls into one of `sub_buckets` hash buckets of its
(destination, audience, op) group; members are ranked inside their bucket, and bucket sizes,
a small aggregate, give each bucket its offset in the group. The group rank is offset + rank,
so every batch is full except the last one of each group, and the result depends only on the
members, not on partitioning.
"""
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from transforms.delta import DELIVERED_STATUSES

GROUP = ["destination_id", "audience_id", "op"]
DEFAULT_SUB_BUCKETS = 512


def assign_batches(classified: DataFrame, rules: DataFrame, sub_buckets: int = DEFAULT_SUB_BUCKETS) -> DataFrame:
    """Batch the adds and removes of classified members; returns the `BATCHED` schema."""
    if sub_buckets < 1:
        raise ValueError(f"sub_buckets must be positive, got {sub_buckets}")
    changes = classified.filter(F.col("status").isin(*DELIVERED_STATUSES)).select(
        "destination_id",
        "audience_id",
        F.col("status").alias("op"),
        "id_type",
        "match_key",
        "source_rows",
        F.pmod(F.xxhash64("id_type", "match_key"), F.lit(sub_buckets)).alias("sub_bucket"),
    )
    ranked = changes.withColumn(
        "rank_in_bucket",
        F.row_number().over(Window.partitionBy(*GROUP, "sub_bucket").orderBy("id_type", "match_key")),
    )
    offsets = (
        changes.groupBy(*GROUP, "sub_bucket")
        .agg(F.count(F.lit(1)).alias("bucket_size"))
        .withColumn(
            "bucket_offset",
            F.sum("bucket_size").over(
                Window.partitionBy(*GROUP).orderBy("sub_bucket").rowsBetween(Window.unboundedPreceding, -1)
            ),
        )
        .select(*GROUP, "sub_bucket", F.coalesce("bucket_offset", F.lit(0)).alias("bucket_offset"))
    )
    group_rank = F.col("bucket_offset") + F.col("rank_in_bucket") - 1
    return (
        ranked.join(F.broadcast(offsets), on=[*GROUP, "sub_bucket"], how="inner")
        .join(F.broadcast(rules.select("destination_id", "max_batch_size")), on="destination_id", how="inner")
        .select(
            *GROUP,
            F.floor(group_rank / F.col("max_batch_size")).cast("int").alias("batch_number"),
            "id_type",
            "match_key",
            "source_rows",
        )
    )
