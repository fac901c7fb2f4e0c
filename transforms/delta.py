"""Compare current audience members with the destination's last committed snapshot.

Statuses:
- `add`: a member the destination does not hold yet;
- `remove`: a member the destination holds that left the audience (`mirror` mode only);
- `unchanged`: held and still a member;
- `retained`: held, no longer a member, but kept (`upsert` mode never removes, and a guarded
  audience sends nothing);
- `held`: a new member of an audience below its minimum size, withheld until it grows.
"""
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from transforms.schemas import MEMBER_KEY

ADD, REMOVE, UNCHANGED, RETAINED, HELD = "add", "remove", "unchanged", "retained", "held"
DELIVERED_STATUSES = (ADD, REMOVE)
SNAPSHOT_STATUSES = (ADD, UNCHANGED, RETAINED)


def classify_members(current: DataFrame, previous: DataFrame, rules: DataFrame) -> DataFrame:
    """Full outer join of current members and the previous snapshot, one status per member.

    `rules` carries each destination's `sync_mode` and `min_audience_size`; the audience size
    that the guard compares is the current membership count.
    """
    sizes = current.groupBy("destination_id", "audience_id").agg(F.count(F.lit(1)).alias("audience_size"))
    joined = (
        current.withColumn("in_current", F.lit(True))
        .join(previous.withColumn("in_previous", F.lit(True)), on=list(MEMBER_KEY), how="full")
        .join(F.broadcast(rules.select("destination_id", "sync_mode", "min_audience_size")), on="destination_id", how="left")
        .join(F.broadcast(sizes), on=["destination_id", "audience_id"], how="left")
    )
    in_current = F.col("in_current").isNotNull()
    in_previous = F.col("in_previous").isNotNull()
    is_guarded = F.coalesce(F.col("audience_size"), F.lit(0)) < F.col("min_audience_size")
    status = (
        F.when(in_current & in_previous, UNCHANGED)
        .when(in_current & is_guarded, HELD)
        .when(in_current, ADD)
        .when(is_guarded | (F.col("sync_mode") == "upsert"), RETAINED)
        .otherwise(REMOVE)
    )
    return joined.select(
        *MEMBER_KEY,
        F.coalesce(F.col("source_rows"), F.lit(0).cast("long")).alias("source_rows"),
        status.alias("status"),
    )
