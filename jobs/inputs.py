"""Read segment membership and consent files (Parquet, CSV or JSON Lines, optionally gzip).

The reader's output is the membership schema plus `source_file` and `read_error`: a record
Spark could not parse is kept with the reason, never dropped. A file whose columns do not
match the data contract fails the run with an error naming the file and the columns.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from jobs import storage
from transforms.schemas import CONSENT, MEMBERSHIP

CORRUPT = "_corrupt_record"
TIMESTAMP_FORMAT = "yyyy-MM-dd'T'HH:mm:ss[.SSSSSS][XXX]['Z']"
FORMATS = {
    r"\.parquet$": "parquet",
    r"\.csv(\.gz)?$": "csv",
    r"\.(jsonl|ndjson|json)(\.gz)?$": "jsonl",
}


class InputError(ValueError):
    """An input file is missing, of an unknown format, or does not match the data contract."""


def detect_format(path: str) -> str:
    """The format of a file, or of the data files inside a directory, from their extension."""
    candidates = [path]
    local = Path(path)
    if not storage.is_s3(path) and not local.exists():
        raise InputError(f"{path}: no such file or directory")
    if local.is_dir():
        candidates = sorted(str(p) for p in local.rglob("*") if p.is_file() and not p.name.startswith(("_", ".")))
        if not candidates:
            raise InputError(f"{path}: no data files in this directory")
    for candidate in candidates:
        for pattern, name in FORMATS.items():
            if re.search(pattern, candidate):
                return name
    raise InputError(f"{path}: cannot tell the format from the file names; pass --format parquet|csv|jsonl")


def _string_schema(columns: list[str]) -> StructType:
    return StructType([StructField(c, StringType()) for c in columns] + [StructField(CORRUPT, StringType())])


def _require_columns(path: str, found: list[str], contract: StructType, optional: set[str]) -> None:
    required = [f.name for f in contract.fields if f.name not in optional]
    missing = [c for c in required if c not in found]
    if missing:
        raise InputError(f"{path}: missing required column(s) {missing}; found {found}")


def _read_text_format(spark: SparkSession, path: str, data_format: str, contract: StructType, optional: set[str]) -> DataFrame:
    """CSV and JSON Lines: every column read as a string, casts and checks done by us."""
    if data_format == "csv":
        header = spark.read.option("header", True).csv(path).columns
        _require_columns(path, header, contract, optional)
        # enforceSchema=false makes Spark check every file's header against the first one,
        # naming the file whose header differs.
        return (
            spark.read.schema(_string_schema(header))
            .option("header", True)
            .option("enforceSchema", False)
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CORRUPT)
            .csv(path)
        )
    columns = [f.name for f in contract.fields]
    return (
        spark.read.schema(_string_schema(columns))
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT)
        .json(path)
    )


def localize(spark: SparkSession, path: str) -> str:
    """A path this Spark can read: `s3://` inputs are staged locally when Spark has no S3 filesystem."""
    if not storage.is_s3(path) or storage.spark_reads_s3(spark):
        return path
    try:
        return storage.download_prefix(path, tempfile.mkdtemp(prefix="audience-relay-input-"))
    except FileNotFoundError as error:
        raise InputError(str(error)) from None


def read_membership(spark: SparkSession, path: str, data_format: str | None = None) -> DataFrame:
    """Membership rows with `source_file` and `read_error` (null when the record parsed)."""
    path = localize(spark, path)
    data_format = data_format or detect_format(path)
    try:
        if data_format == "parquet":
            raw = spark.read.parquet(path)
            _require_columns(path, raw.columns, MEMBERSHIP, {"updated_at"})
            read_error = F.lit(None).cast("string")
        else:
            raw = _read_text_format(spark, path, data_format, MEMBERSHIP, {"updated_at"})
            read_error = F.col(CORRUPT)
    except AnalysisException as error:
        raise InputError(f"{path}: cannot read as {data_format}: {error.getMessage() if hasattr(error, 'getMessage') else error}") from None
    if "updated_at" not in raw.columns:
        raw = raw.withColumn("updated_at", F.lit(None).cast("timestamp"))
    for field in MEMBERSHIP.fields:
        if field.name in raw.columns and raw.schema[field.name].dataType.typeName() in ("struct", "array", "map"):
            raise InputError(f"{path}: column {field.name!r} is {raw.schema[field.name].dataType.simpleString()}, expected a scalar")
    updated_at = (
        F.col("updated_at").cast("timestamp")
        if data_format == "parquet"
        else F.coalesce(F.to_timestamp("updated_at", TIMESTAMP_FORMAT), F.col("updated_at").cast("timestamp"))
    )
    bad_timestamp = F.col("updated_at").isNotNull() & updated_at.isNull()
    return raw.select(
        F.col("user_id").cast("string").alias("user_id"),
        F.col("id_type").cast("string").alias("id_type"),
        F.col("id_value").cast("string").alias("id_value"),
        F.col("segment_id").cast("string").alias("segment_id"),
        updated_at.alias("updated_at"),
        F.input_file_name().alias("source_file"),
        F.coalesce(read_error, F.when(bad_timestamp, F.lit("unparseable updated_at"))).alias("read_error"),
    )


def read_consent(spark: SparkSession, path: str, data_format: str | None = None) -> DataFrame:
    """Consent rows (`user_id`, `scope`); unparseable consent records stop the run.

    A consent row that cannot be read might be an opt-out: delivering that user anyway would
    break a promise, so unlike membership rows these are not skipped.
    """
    path = localize(spark, path)
    data_format = data_format or detect_format(path)
    try:
        if data_format == "parquet":
            raw = spark.read.parquet(path)
            _require_columns(path, raw.columns, CONSENT, set())
            return raw.select([F.col(f.name).cast("string") for f in CONSENT.fields])
        raw = _read_text_format(spark, path, data_format, CONSENT, set())
    except AnalysisException as error:
        raise InputError(f"{path}: cannot read consent as {data_format}: {error}") from None
    broken = raw.filter(F.col(CORRUPT).isNotNull() | F.col("user_id").isNull()).select(F.input_file_name().alias("file")).limit(1).collect()
    if broken:
        raise InputError(f"{broken[0]['file']}: a consent record cannot be parsed or has no user_id; fix it before delivering")
    return raw.select([F.col(f.name) for f in CONSENT.fields])
