"""Read segment membership and consent files (Parquet, CSV or JSON Lines, optionally gzip).

The reader's output is the membership schema plus `source_file` and `read_error`: a record
Spark could not parse is kept with the reason, never dropped. A file whose columns do not
match the data contract fails the run with an error naming the file and the columns.
"""
from __future__ import annotations

import gzip
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from jobs import storage
from transforms.identifiers import strip_whitespace
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


def _data_files(root: Path) -> list[Path]:
    """The data files under a directory, without Spark's `_SUCCESS` and hidden files."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(("_", ".")))


def detect_format(path: str) -> str:
    """The format of a file, or of the data files inside a directory, from their extension."""
    candidates = [path]
    local = Path(path)
    if not storage.is_s3(path) and not local.exists():
        raise InputError(f"{path}: no such file or directory")
    if local.is_dir():
        candidates = [str(p) for p in _data_files(local)]
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


def _read_text_format(spark: SparkSession, located: Located, data_format: str, contract: StructType, optional: set[str]) -> DataFrame:
    """CSV and JSON Lines: every column read as a string, casts and checks done by us."""
    path = located.path
    if data_format == "csv":
        header = spark.read.option("header", True).csv(path).columns
        _require_columns(located.source, header, contract, optional)
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


@dataclass(frozen=True)
class Located:
    """An input as Spark reads it (`path`) and as the user named it (`source`)."""

    path: str
    source: str

    def source_file(self) -> F.Column:
        """`input_file_name()`, with a local staging folder mapped back to the user's URI."""
        if self.path == self.source:
            return F.input_file_name()
        staged = "file://" + str(Path(self.path).resolve())
        return F.regexp_replace(F.input_file_name(), "^\\Q" + staged + "\\E", self.source.rstrip("/"))


def localize(spark: SparkSession, path: str) -> Located:
    """A path this Spark can read: `s3://` inputs are staged locally when Spark has no S3 filesystem."""
    if not storage.is_s3(path) or storage.spark_reads_s3(spark):
        return Located(path, path)
    try:
        return Located(storage.download_prefix(path, tempfile.mkdtemp(prefix="audience-relay-input-")), path)
    except (FileNotFoundError, ValueError) as error:
        raise InputError(str(error)) from None


def _check_json_lines_keys(located: Located, contract: StructType, optional: set[str]) -> None:
    """Spark infers one schema for all JSON files; check each file's first record ourselves,
    so one file with a renamed key is named instead of turning into rejected rows."""
    root = Path(located.path)
    files = [root] if root.is_file() else _data_files(root)
    for file in files:
        opener = gzip.open if file.suffix == ".gz" else open
        with opener(file, "rt", encoding="utf-8", errors="replace") as handle:
            first = next((line for line in handle if line.strip()), None)
        if first is None:
            continue
        try:
            keys = list(json.loads(first))
        except (ValueError, TypeError):
            continue  # the record itself is kept as malformed
        name = located.source if root.is_file() else f"{located.source.rstrip('/')}/{file.relative_to(root)}"
        _require_columns(name, keys, contract, optional)


def read_membership(spark: SparkSession, path: str, data_format: str | None = None) -> DataFrame:
    """Membership rows with `source_file` and `read_error` (null when the record parsed)."""
    located = localize(spark, path)
    data_format = data_format or detect_format(located.path)
    try:
        if data_format == "parquet":
            raw = spark.read.parquet(located.path)
            _require_columns(located.source, raw.columns, MEMBERSHIP, {"updated_at"})
            read_error = F.lit(None).cast("string")
        else:
            if data_format == "jsonl" and not storage.is_s3(located.path):
                _check_json_lines_keys(located, MEMBERSHIP, {"updated_at"})
            raw = _read_text_format(spark, located, data_format, MEMBERSHIP, {"updated_at"})
            read_error = F.col(CORRUPT)
    except AnalysisException as error:
        raise InputError(f"{located.source}: cannot read as {data_format}: {error}") from None
    if "updated_at" not in raw.columns:
        raw = raw.withColumn("updated_at", F.lit(None).cast("timestamp"))
    for field in MEMBERSHIP.fields:
        if raw.schema[field.name].dataType.typeName() in ("struct", "array", "map"):
            raise InputError(f"{located.source}: column {field.name!r} is {raw.schema[field.name].dataType.simpleString()}, expected a scalar")
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
        located.source_file().alias("source_file"),
        F.coalesce(read_error, F.when(bad_timestamp, F.lit("unparseable updated_at"))).alias("read_error"),
    )


def read_consent(spark: SparkSession, path: str, known_scopes: set[str], data_format: str | None = None) -> DataFrame:
    """Consent rows (`user_id`, `scope`), stripped and with lower-case scopes.

    Unlike membership rows, a consent row is never skipped: one that cannot be parsed, has no
    user, or names a scope that is neither `*` nor a configured destination might be an
    opt-out, and delivering that user anyway would break a promise. Any such row stops the
    run, naming the file.
    """
    located = localize(spark, path)
    data_format = data_format or detect_format(located.path)
    try:
        if data_format == "parquet":
            raw = spark.read.parquet(located.path)
            _require_columns(located.source, raw.columns, CONSENT, set())
            raw = raw.select([F.col(f.name).cast("string") for f in CONSENT.fields]).withColumn(CORRUPT, F.lit(None).cast("string"))
        else:
            if data_format == "jsonl" and not storage.is_s3(located.path):
                _check_json_lines_keys(located, CONSENT, set())
            raw = _read_text_format(spark, located, data_format, CONSENT, set())
    except AnalysisException as error:
        raise InputError(f"{located.source}: cannot read consent as {data_format}: {error}") from None
    consent = raw.select(
        strip_whitespace("user_id").alias("user_id"),
        F.lower(strip_whitespace("scope")).alias("scope"),
        F.col(CORRUPT),
        located.source_file().alias("file"),
    ).cache()
    is_broken = (
        F.col(CORRUPT).isNotNull()
        | (F.coalesce(F.col("user_id"), F.lit("")) == "")
        | ~F.coalesce(F.col("scope"), F.lit("")).isin("*", *sorted(known_scopes))
    )
    broken = consent.filter(is_broken).select("file", "scope").limit(5).collect()
    if broken:
        examples = ", ".join(f"{row.file} (scope {row.scope!r})" for row in broken)
        raise InputError(
            f"consent rows that are unreadable, have no user_id, or name a scope other than '*' or a configured "
            f"destination {sorted(known_scopes)}: {examples}; fix them before delivering"
        )
    return consent.select("user_id", "scope")
