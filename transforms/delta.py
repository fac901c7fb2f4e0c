"""Compare current audience members with the destination's last committed snapshot.

Statuses:
- `add`: a member the destination does not hold yet;
- `remove`: a member the destination holds that left the audience (`mirror` mode only), or
  whose consent was withdrawn (every mode, guarded audiences too);
- `add` also for a held member whose consent signals changed (transforms/consent_signals.py):
  sent again so the destination holds the new consent;
- `unchanged`: held and still a member, with the same consent;
- `retained`: held, no longer a member, but kept (`upsert` mode never removes, and a guarded
  audience sends nothing);
- `held`: a new member of an audience below its minimum size, withheld until it grows;
- `remove_held`: a `remove` of an audience whose removals exceed its removal guard (a share of
  its committed members, or a count): not sent until approved, so a partial input cannot empty
  an audience. Consent withdrawals are never held.
"""
from functools import reduce
from operator import or_

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from audience_relay.transforms.schemas import CONSENT_SIGNALS, MEMBER_KEY

ADD, REMOVE, UNCHANGED, RETAINED, HELD, REMOVE_HELD = "add", "remove", "unchanged", "retained", "held", "remove_held"
DELIVERED_STATUSES = (ADD, REMOVE)
BATCHED_STATUSES = (ADD, REMOVE, REMOVE_HELD)   # held removals are batched too, to be sent once approved
SNAPSHOT_STATUSES = (ADD, UNCHANGED, RETAINED)


def mark_membership(current: DataFrame, previous: DataFrame) -> DataFrame:
    """Full outer join of this run's members (`MEMBERS`) and the previous snapshot: where each member is.

    A member is current when some input row supports it; `withdrawn` when consent removed some of
    its rows (a key another, consenting row still supports stays current). A member's consent
    signals are the current ones, or the snapshot's for a member no longer current;
    `consent_changed` says a member in both differs in them.
    """
    earlier = previous.select(*MEMBER_KEY, *[F.col(s).alias(f"previous_{s}") for s in CONSENT_SIGNALS])
    marked = current.join(earlier.withColumn("in_previous", F.lit(True)), on=list(MEMBER_KEY), how="full")
    in_current, in_previous = F.coalesce(F.col("source_rows") > 0, F.lit(False)), F.col("in_previous").isNotNull()
    withdrawn_rows = F.coalesce(F.col("withdrawn_rows"), F.lit(0).cast("long"))
    differs = [~F.col(s).eqNullSafe(F.col(f"previous_{s}")) for s in CONSENT_SIGNALS]
    return marked.select(
        *MEMBER_KEY,
        *[F.when(in_current, F.col(s)).otherwise(F.col(f"previous_{s}")).alias(s) for s in CONSENT_SIGNALS],
        F.coalesce(F.col("source_rows"), F.lit(0).cast("long")).alias("source_rows"),
        withdrawn_rows.alias("withdrawn_rows"),
        in_current.alias("in_current"),
        in_previous.alias("in_previous"),
        (withdrawn_rows > 0).alias("withdrawn"),
        (in_current & in_previous & reduce(or_, differs)).alias("consent_changed"),
    )


def audience_sizes(marked: DataFrame) -> DataFrame:
    """Per audience: its current size (the minimum-size guard's), its committed size, how many
    committed members left the input (the removal guard's) and how many input rows consent
    removed, in one aggregate."""
    return marked.groupBy("destination_id", "audience_id").agg(
        F.count_if("in_current").alias("audience_size"),
        F.count_if("in_previous").alias("committed_size"),
        F.count_if(F.col("in_previous") & ~F.col("in_current") & ~F.col("withdrawn")).alias("leaving"),
        F.sum("withdrawn_rows").alias("withdrawn_rows"),
    )


def removals_held(sizes: DataFrame, rules: DataFrame) -> DataFrame:
    """`sizes` with `removals_held`: true where the audience's mirror removals exceed its guard."""
    limits = rules.select("destination_id", "sync_mode", "max_remove_fraction", "max_removes")
    over_fraction = F.col("leaving") > F.col("max_remove_fraction") * F.col("committed_size")
    over_count = F.col("leaving") > F.col("max_removes")
    held = (F.col("sync_mode") == "mirror") & (F.coalesce(over_fraction, F.lit(False)) | F.coalesce(over_count, F.lit(False)))
    return sizes.join(F.broadcast(limits), on="destination_id", how="left").select(*sizes.columns, held.alias("removals_held"))


def classify_marked(marked: DataFrame, sizes: DataFrame, rules: DataFrame) -> DataFrame:
    """One status per marked member.

    `rules` carries each destination's `sync_mode`, `min_audience_size` and removal guard;
    `sizes` is `audience_sizes(marked)`, passed in so a job can compute it once and reuse it.
    """
    joined = marked.join(
        F.broadcast(rules.select("destination_id", "sync_mode", "min_audience_size")), on="destination_id", how="left"
    ).join(F.broadcast(removals_held(sizes, rules).drop("withdrawn_rows")), on=["destination_id", "audience_id"], how="left")
    in_current, in_previous = F.col("in_current"), F.col("in_previous")
    is_guarded = F.coalesce(F.col("audience_size"), F.lit(0)) < F.col("min_audience_size")
    status = (
        F.when(in_current & in_previous & F.col("consent_changed"), ADD)
        .when(in_current & in_previous, UNCHANGED)
        .when(in_current & is_guarded, HELD)
        .when(in_current, ADD)
        .when(F.col("withdrawn"), REMOVE)   # consent withdrawn: removed whatever the mode or guard
        .when(is_guarded | (F.col("sync_mode") == "upsert"), RETAINED)
        .when(F.coalesce(F.col("removals_held"), F.lit(False)), REMOVE_HELD)
        .otherwise(REMOVE)
    )
    # A key only consent-removed rows name, which the destination never held, is no member at all
    # (its rows are counted by audience_sizes).
    return joined.filter(in_current | in_previous).select(*MEMBER_KEY, *CONSENT_SIGNALS, "source_rows", status.alias("status"))


def classify_members(current: DataFrame, previous: DataFrame, rules: DataFrame) -> DataFrame:
    """Statuses of current members against the previous snapshot, in one call."""
    marked = mark_membership(current, previous)
    return classify_marked(marked, audience_sizes(marked), rules)
