"""Google's consent signals per member (ad user data, ad personalization), read from input columns.

A Google destination's consent is either fixed in its config (sent once per request) or read,
signal by signal, from a column of the membership input that the config names. A value is
trimmed and lower-cased; empty means unspecified; anything but `granted` or `denied` makes the
row unusable (`invalid_consent`, kept with the rejected rows). A member (one match key of one
audience) may come from several rows: it is `denied` if any row denies, `granted` only if every
row grants, unspecified otherwise, so a doubtful member is never sent as consenting.
"""
from __future__ import annotations

from functools import reduce
from operator import or_

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from audience_relay.transforms.identifiers import strip_whitespace
from audience_relay.transforms.schemas import CONSENT_SIGNALS

GRANTED, DENIED = "granted", "denied"
INVALID_CONSENT = "invalid_consent"
CARRIED_PREFIX = "consent:"   # no input column name the config accepts has a colon
# Ranked so that the minimum over a member's rows is its consent: a denial wins, a grant needs all.
_RANK = {DENIED: 0, None: 1, GRANTED: 2}


def carried(column: str) -> str:
    """The name an input's consent column has inside the pipeline, clashing with none of ours."""
    return CARRIED_PREFIX + column


def consent_value(column: str | Column) -> Column:
    """`granted`, `denied`, another word (invalid) or null (unspecified: null or blank)."""
    cleaned = F.lower(strip_whitespace(column))
    return F.when(cleaned != "", cleaned)


def flag_invalid_consent(rows: DataFrame, columns: tuple[str, ...]) -> DataFrame:
    """Set `reject_reason` to `invalid_consent` on usable rows whose consent column says neither."""
    if not columns:
        return rows
    invalid = reduce(or_, [consent_value(c).isNotNull() & ~consent_value(c).isin(GRANTED, DENIED) for c in columns])
    return rows.withColumn("reject_reason", F.coalesce("reject_reason", F.when(invalid, F.lit(INVALID_CONSENT))))


def with_member_consent(mapped: DataFrame, sources: dict[str, dict[str, str]]) -> DataFrame:
    """Add each row's consent signals for its destination; drop the input's consent columns.

    `sources`: destination id -> {signal: input column} for the signals a destination reads from
    the input; every other destination's signals are null (fixed in its config, or none).
    """
    read = sorted({column for columns in sources.values() for column in columns.values()})
    signals = []
    for signal in CONSENT_SIGNALS:
        value = F.lit(None).cast("string")
        for destination_id, columns in sorted(sources.items()):
            if signal in columns:
                value = F.when(F.col("destination_id") == destination_id, consent_value(columns[signal])).otherwise(value)
        signals.append(value.alias(signal))
    return mapped.select(*[c for c in mapped.columns if c not in read and c not in CONSENT_SIGNALS], *signals)


def _rank(signal: str) -> Column:
    return F.when(F.col(signal) == DENIED, _RANK[DENIED]).when(F.col(signal) == GRANTED, _RANK[GRANTED]).otherwise(_RANK[None])


def member_consent_aggregates(counted: Column) -> list[Column]:
    """Aggregates (for a `groupBy` of member keys) giving each member's signals from its rows
    where `counted` holds (the rows consent keeps)."""
    aggregates = []
    for signal in CONSENT_SIGNALS:
        lowest = F.min(F.when(counted, _rank(signal)))
        aggregates.append(F.when(lowest == _RANK[DENIED], DENIED).when(lowest == _RANK[GRANTED], GRANTED).alias(signal))
    return aggregates
