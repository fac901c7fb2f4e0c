"""Compare current audience members with the destination's last committed snapshot.

Statuses:
- `add`: a member the destination does not hold yet;
- `remove`: a member the destination holds that left the audience (`mirror` mode only), or
  whose consent was withdrawn (every mode, guarded audiences too);
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


def mark_membership(current: DataFrame, previous: DataFrame, withdrawn: DataFrame | None = None) -> DataFrame:
    """Full outer join of current members and the previous snapshot: where each member is.

    `withdrawn`: member keys of this run's rows that consent removed (`withdrawn` is true for
    them); a key that another, consenting row still supports stays current.
    """
    marked = current.withColumn("in_current", F.lit(True)).join(
        previous.withColumn("in_previous", F.lit(True)), on=list(MEMBER_KEY), how="full"
    )
    if withdrawn is not None:
        marked = marked.join(withdrawn.select(*MEMBER_KEY).distinct().withColumn("withdrawn", F.lit(True)), on=list(MEMBER_KEY), how="left")
    return marked.select(
        *MEMBER_KEY,
        F.coalesce(F.col("source_rows"), F.lit(0).cast("long")).alias("source_rows"),
        F.col("in_current").isNotNull().alias("in_current"),
        F.col("in_previous").isNotNull().alias("in_previous"),
        (F.col("withdrawn").isNotNull() if withdrawn is not None else F.lit(False)).alias("withdrawn"),
    )


def audience_sizes(marked: DataFrame) -> DataFrame:
    """Current membership count per audience: the size the minimum-size guard compares."""
    return marked.groupBy("destination_id", "audience_id").agg(F.count_if("in_current").alias("audience_size"))


def classify_marked(marked: DataFrame, sizes: DataFrame, rules: DataFrame) -> DataFrame:
    """One status per marked member.

    `rules` carries each destination's `sync_mode` and `min_audience_size`; `sizes` is
    `audience_sizes(marked)`, passed in so a job can compute it once and reuse it.
    """
    joined = marked.join(
        F.broadcast(rules.select("destination_id", "sync_mode", "min_audience_size")), on="destination_id", how="left"
    ).join(F.broadcast(sizes), on=["destination_id", "audience_id"], how="left")
    in_current, in_previous = F.col("in_current"), F.col("in_previous")
    is_guarded = F.coalesce(F.col("audience_size"), F.lit(0)) < F.col("min_audience_size")
    status = (
        F.when(in_current & in_previous, UNCHANGED)
        .when(in_current & is_guarded, HELD)
        .when(in_current, ADD)
        .when(F.col("withdrawn"), REMOVE)   # consent withdrawn: removed whatever the mode or guard
        .when(is_guarded | (F.col("sync_mode") == "upsert"), RETAINED)
        .otherwise(REMOVE)
    )
    return joined.select(*MEMBER_KEY, "source_rows", status.alias("status"))


def classify_members(current: DataFrame, previous: DataFrame, rules: DataFrame) -> DataFrame:
    """Statuses of current members against the previous snapshot, in one call."""
    marked = mark_membership(current, previous)
    return classify_marked(marked, audience_sizes(marked), rules)
