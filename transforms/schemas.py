"""Explicit schemas for every boundary of the prepare pipeline (DESIGN.md, data contract)."""
from pyspark.sql.types import (
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)


MEMBERSHIP = StructType(
    [
        StructField("user_id", StringType()),
        StructField("id_type", StringType()),
        StructField("id_value", StringType()),
        StructField("segment_id", StringType()),
        StructField("updated_at", TimestampType()),
    ]
)

CONSENT = StructType(
    [
        StructField("user_id", StringType()),
        StructField("scope", StringType()),
    ]
)

# Membership after normalization: the raw row, where it came from, its canonical identifier
# and, for unusable rows, why.
NORMALIZED = StructType(
    MEMBERSHIP.fields
    + [
        StructField("source_file", StringType()),
        StructField("id_normalized", StringType()),
        StructField("reject_reason", StringType()),
    ]
)

# Rejected rows are written with these columns, then the consent columns the config reads
# (under their input names, as they were written).
REJECTED = StructType(
    [
        StructField("reject_reason", StringType()),
        StructField("source_file", StringType()),
        StructField("user_id", StringType()),
        StructField("id_type", StringType()),
        StructField("id_value", StringType()),
        StructField("segment_id", StringType()),
        StructField("updated_at", TimestampType()),
    ]
)

# One row per (segment, accepted id type, destination): the destination's audience for that
# segment plus the identifier rules the destination publishes for that id type.
AUDIENCE_MAPPING = StructType(
    [
        StructField("segment_id", StringType(), False),
        StructField("id_type", StringType(), False),
        StructField("destination_id", StringType(), False),
        StructField("audience_id", StringType(), False),
        StructField("hash_sha256", BooleanType(), False),
        StructField("phone_with_plus", BooleanType(), False),
        StructField("gmail_canonical", BooleanType(), False),
    ]
)

# Per-destination delivery rules that the delta and batching transforms need.
DESTINATION_RULES = StructType(
    [
        StructField("destination_id", StringType(), False),
        StructField("sync_mode", StringType(), False),
        StructField("max_batch_size", IntegerType(), False),
        StructField("min_audience_size", IntegerType(), False),
        # The removal guard (None: no limit of that kind).
        StructField("max_remove_fraction", DoubleType(), True),
        StructField("max_removes", LongType(), True),
    ]
)

CONSENT_OPT_OUT = StructType(
    [
        StructField("user_id", StringType(), False),
        StructField("destination_id", StringType(), False),
    ]
)

# What a destination holds: the unit of the snapshot, the delta and the batches.
MEMBER_KEY = ("destination_id", "audience_id", "id_type", "match_key")

# A member's consent as Google asks for it (transforms/consent_signals.py): `granted`, `denied`,
# or null (unspecified, and always null for destinations whose consent is fixed in the config).
CONSENT_SIGNALS = ("ad_user_data", "ad_personalization")
_SIGNAL_FIELDS = [StructField(signal, StringType(), True) for signal in CONSENT_SIGNALS]

SNAPSHOT = StructType(
    [
        StructField("destination_id", StringType(), False),
        StructField("audience_id", StringType(), False),
        StructField("id_type", StringType(), False),
        StructField("match_key", StringType(), False),
    ]
    + _SIGNAL_FIELDS
)

# transforms/input_counts.py: the input counted at two grains (segment or file) in one aggregate.
INPUT_COUNTS = StructType(
    [
        StructField("grain", StringType(), False),
        StructField("id_type", StringType(), True),
        StructField("segment_id", StringType(), True),
        StructField("reject_reason", StringType(), True),
        StructField("source_file", StringType(), True),
        StructField("rows", LongType(), False),
        StructField("null_user_ids", LongType(), False),
        StructField("null_id_values", LongType(), False),
    ]
)

# A member of this run: the input rows that support it, and the rows of it that consent removed
# (a member with no supporting row and some withdrawn ones is no member, but is removed).
MEMBERS = StructType(SNAPSHOT.fields + [StructField("source_rows", LongType(), False), StructField("withdrawn_rows", LongType(), False)])

AUDIENCE_SIZES = StructType(
    [
        StructField("destination_id", StringType(), False),
        StructField("audience_id", StringType(), False),
        StructField("audience_size", LongType(), False),
        StructField("committed_size", LongType(), False),   # members of the baseline snapshot
        StructField("leaving", LongType(), False),          # baseline members gone from the input, consent aside
        StructField("withdrawn_rows", LongType(), False),   # input rows consent removed
    ]
)

CLASSIFIED = StructType(SNAPSHOT.fields + [StructField("source_rows", LongType(), False), StructField("status", StringType(), False)])

BATCHED = StructType(
    [
        StructField("destination_id", StringType(), False),
        StructField("audience_id", StringType(), False),
        StructField("op", StringType(), False),
        StructField("batch_number", IntegerType(), False),
        StructField("id_type", StringType(), False),
        StructField("match_key", StringType(), False),
        StructField("source_rows", LongType(), False),  # input rows behind the member (0 for removes)
    ]
    + _SIGNAL_FIELDS
)
