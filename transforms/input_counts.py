"""The normalized input's counts, in one aggregate: per (id type, segment, reject reason) with the
nulls the quality gate checks, and per input file.

Both grains come from one pass: each row is counted once at each (an explode of its two keys,
aggregated partially before the shuffle), so the statistics, the per-file counts of the manifest
and the quality gate's figures cost one Spark job instead of one per figure.
"""
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from audience_relay.transforms.schemas import INPUT_COUNTS

SEGMENT_GRAIN, FILE_GRAIN = "segment", "file"


def input_counts(normalized: DataFrame) -> DataFrame:
    """`INPUT_COUNTS` rows: the segment grain keys id type, segment and reject reason (null source
    file); the file grain keys the source file (null others). Null counts are of raw `id_value`
    and of the normalized `user_id`, at both grains."""
    none = F.lit(None).cast("string")
    segment = F.struct(F.lit(SEGMENT_GRAIN).alias("grain"), "id_type", "segment_id", "reject_reason", none.alias("source_file"))
    file = F.struct(F.lit(FILE_GRAIN).alias("grain"), none.alias("id_type"), none.alias("segment_id"), none.alias("reject_reason"),
                    F.col("source_file"))
    return (
        normalized.select(F.explode(F.array(segment, file)).alias("key"), "user_id", "id_value")
        .groupBy("key.grain", "key.id_type", "key.segment_id", "key.reject_reason", "key.source_file")
        .agg(F.count(F.lit(1)).alias("rows"), F.count_if(F.col("user_id").isNull()).alias("null_user_ids"),
             F.count_if(F.col("id_value").isNull()).alias("null_id_values"))
        .select(INPUT_COUNTS.fieldNames())
    )
