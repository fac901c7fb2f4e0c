"""From normalized membership rows to the distinct members of each destination's audiences."""
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from audience_relay.transforms.consent_signals import member_consent_aggregates
from audience_relay.transforms.identifiers import strip_whitespace, with_match_key
from audience_relay.transforms.schemas import MEMBERS

ALL_DESTINATIONS = "*"


def consent_opt_outs(consent: DataFrame, destination_ids: list[str]) -> DataFrame:
    """Expand consent rows to one (user_id, destination_id) pair per destination they block.

    A `*` scope blocks every destination; any other scope names one destination.
    """
    spark = consent.sparkSession
    destinations = spark.createDataFrame([(d,) for d in destination_ids], "destination_id string")
    scope = strip_whitespace("scope")
    blocks_destination = (scope == ALL_DESTINATIONS) | (scope == F.col("destination_id"))
    return (
        consent.filter(F.col("user_id").isNotNull())
        .join(F.broadcast(destinations), on=blocks_destination, how="inner")
        .select(strip_whitespace("user_id").alias("user_id"), "destination_id")
        .dropDuplicates()  # a user may opt out both globally and per destination
    )


def map_to_audiences(valid: DataFrame, mapping: DataFrame) -> DataFrame:
    """Fan each usable row out to the audiences its segment feeds, one row per destination.

    The mapping only holds id types a destination accepts, so the inner join also drops rows
    of unaccepted types; both are counted by the job from the per-segment statistics.
    """
    return valid.join(F.broadcast(mapping), on=["segment_id", "id_type"], how="inner")


def mark_opted_out(mapped: DataFrame, opt_outs: DataFrame, broadcast: bool = True) -> DataFrame:
    """Flag (`opted_out`) the rows of users who withdrew consent for the row's destination.

    Flagged rather than dropped, so the job counts them from the data. Opt-out lists are usually
    small enough to broadcast; the job passes `broadcast=False` for lists too large for executor
    memory, where a shuffled join is the safe plan. `opt_outs` holds each pair once, so the left
    join never multiplies rows.
    """
    flags = opt_outs.select("user_id", "destination_id", F.lit(True).alias("opted_out"))
    return mapped.join(F.broadcast(flags) if broadcast else flags, on=["user_id", "destination_id"], how="left").withColumn(
        "opted_out", F.coalesce("opted_out", F.lit(False))
    )


def to_members(flagged: DataFrame) -> DataFrame:
    """Collapse rows into distinct audience members (`MEMBERS`): how many input rows each stands
    for, how many of its rows consent removed (`opted_out`, see mark_opted_out) and the consent
    the others give together (rows carry `with_member_consent`'s signals). One aggregate for both
    kinds of rows, so a run groups its rows once."""
    consenting = ~F.col("opted_out")
    return (
        flagged.transform(with_match_key)
        .groupBy("destination_id", "audience_id", "id_type", "match_key")
        .agg(F.count_if(consenting).alias("source_rows"), F.count_if(F.col("opted_out")).alias("withdrawn_rows"),
             *member_consent_aggregates(consenting))
        .select(MEMBERS.fieldNames())
    )
