"""Read segment membership and consent files (Parquet, CSV or JSON Lines, optionally gzip).

The reader's output is the membership schema plus `source_file` and `read_error`: a record
Spark could not parse is kept with the reason, never dropped. A file whose columns do not
match the data contract fails the run with an error naming the file and the columns, and so
does a file Spark cannot read at all (a truncated Parquet or gzip file), through
`naming_unreadable_files`.
"""
from __future__ import annotations

import gzip
import json
import re
import tempfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType, TimestampNTZType, TimestampType

from audience_relay.connectors.aws import s3
from audience_relay.pipeline import storage
from audience_relay.pipeline.config import DESTINATION_ID
from audience_relay.transforms.consent_signals import carried
from audience_relay.transforms.contract import column_names, format_of, missing_columns_error
from audience_relay.transforms.identifiers import strip_whitespace
from audience_relay.transforms.schemas import CONSENT, MEMBERSHIP

CORRUPT = "_corrupt_record"
TIMESTAMP_FORMAT = "yyyy-MM-dd'T'HH:mm:ss[.SSSSSS][XXX]['Z']"
# The membership columns the data contract types as strings (Parquet must store them so).
STRING_COLUMNS = ("user_id", "id_type", "id_value", "segment_id")


class InputError(ValueError):
    """An input file is missing, of an unknown format, or does not match the data contract."""


# What a writer puts in a folder once it is complete: Spark's marker, the one the S3 trigger
# waits for (orchestration.ingest.COMPLETION_MARKER; a test keeps them equal).
COMPLETION_MARKER = "_SUCCESS"


def require_completion_marker(path: str) -> str | None:
    """Refuse a folder whose writer has not put its completion marker in it yet: in mirror mode
    the members of the files still missing would be removed. Returns the marker's name (None
    for a single file, complete once it exists)."""
    if not storage.is_folder(path):
        return None
    if not storage.exists(storage.join(path, COMPLETION_MARKER)):
        raise InputError(f"{path}: no completion marker {COMPLETION_MARKER} in this folder, so its writer may not be done; "
                         "run once it is there, or pass --without-completion-marker to read the folder as it is")
    return COMPLETION_MARKER


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
        if found := format_of(candidate):
            return found
    raise InputError(f"{path}: cannot tell the format from the file names; pass --format parquet|csv|jsonl")


def _string_schema(columns: list[str]) -> StructType:
    return StructType([StructField(c, StringType()) for c in columns] + [StructField(CORRUPT, StringType())])


def _require_columns(path: str, found: list[str], contract: StructType, optional: set[str]) -> None:
    if error := missing_columns_error(found, tuple(f.name for f in contract.fields if f.name not in optional)):
        raise InputError(f"{path}: {error}")


def _read_text_format(spark: SparkSession, located: Located, data_format: str, contract: StructType, optional: set[str]) -> DataFrame:
    """CSV and JSON Lines: every column read as a string, casts and checks done by us."""
    path = located.path
    if data_format == "csv":
        header = spark.read.option("header", True).csv(path).columns
        if not header:
            raise InputError(f"{located.source}: no CSV header line: the input is empty")
        _require_columns(located.source, header, contract, optional)
        # Columns are taken by name from the header, in any order, and columns the contract
        # does not name are ignored. Within one read Spark maps CSV columns by position, so
        # every file must have the header read above (from one of the files): enforceSchema=false
        # makes Spark check each file's header against it, naming a file that differs
        # (naming_unreadable_files).
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


# Staged copy -> the `s3://` URI it stands for, so that an error Spark raises on a staged
# file names the object the user knows.
_STAGED: dict[str, str] = {}


def localize(spark: SparkSession, path: str) -> Located:
    """A path this Spark can read: `s3://` inputs are staged locally when Spark has no S3 filesystem."""
    if not storage.is_s3(path) or storage.spark_reads_s3(spark):
        return Located(path, path)
    try:
        staged = storage.download_prefix(path, tempfile.mkdtemp(prefix="audience-relay-input-"))
    except (FileNotFoundError, ValueError) as error:
        raise InputError(str(error)) from None
    _STAGED[str(Path(staged).resolve())] = path.rstrip("/")
    return Located(staged, path)


def _user_name(uri: str) -> str:
    """A file as Spark names it in errors (`file:///tmp/a%20b.csv`) as the user named it."""
    name = unquote(re.sub(r"^file:(//)?", "", uri))
    for staged, source in _STAGED.items():
        if name == staged or name.startswith(staged + "/"):
            return source + name[len(staged):]
    return name


# What Spark says when one input file cannot be read, and how to say it to the user. Spark
# puts the file's URI in each of these messages; the patterns are tried in order.
_UNREADABLE = (
    (
        re.compile(r"Parquet column cannot be converted in file (?P<file>\S+)\. Column: \[(?P<column>[^\]]+)\], "
                   r"Expected: (?P<expected>\w+), Found: (?P<found>\w+)"),
        "column {column!r} is stored as {found} in this file, expected {expected} (user_id, id_type, id_value and "
        "segment_id must be strings; updated_at must have one type across the input's files)",
    ),
    (
        re.compile(r"CSV header does not conform to the schema\.\s*Header: (?P<header>[^\n]*)\n\s*Schema: (?P<schema>[^\n]*)"
                   r"\n.*?CSV file: (?P<file>\S+)", re.S),
        "header [{header}] differs from [{schema}], the header this input is read with (taken from one of its files); "
        "every CSV file of one input needs the same header",
    ),
    (
        re.compile(r"Number of column in CSV header is not equal to number of fields in the schema:\s*Header length: "
                   r"(?P<found>\d+), schema size: (?P<expected>\d+)\s*CSV file: (?P<file>\S+)"),
        "header has {found} columns, the header this input is read with (taken from one of its files) {expected}; "
        "every CSV file of one input needs the same header",
    ),
    (re.compile(r"Could not read footer for file: (?P<file>\S+?)\.?\s"), "unreadable file ({cause})"),
    (re.compile(r"Encountered error while reading file (?P<file>\S+?)\. Details:"), "unreadable file ({cause})"),
    (re.compile(r"(?P<file>\S+) is not a Parquet file"), "unreadable file ({cause})"),
)
_CAUSE = re.compile(r"Caused by: [\w.$]+: ([^\n]+)")


# Spark does not say which file a broken compressed stream came from.
_BROKEN_STREAM = re.compile(r"(java\.io\.EOFException: Unexpected end of input stream|java\.util\.zip\.ZipException: [^\n]+"
                            r"|java\.io\.IOException: Not in GZIP format)")


def _broken_gzip(source: str) -> str | None:
    """The first gzip file of a local (or staged) input that does not decompress, as the user names it.

    Only on the failure path: it decompresses the input's gzip files. An input Spark reads
    from S3 itself is not searched (that would download it); the error then names the input.
    """
    staged = {source: path for path, source in _STAGED.items()}.get(source.rstrip("/"))
    root = Path(staged or source)
    if storage.is_s3(str(root)) or not root.exists():
        return None
    for file in [root] if root.is_file() else [p for p in _data_files(root) if p.suffix == ".gz"]:
        try:
            with gzip.open(file, "rb") as handle:
                while handle.read(1 << 20):
                    pass
        except (OSError, EOFError, zlib.error):
            return _user_name(str(file.resolve()))
    return None


def unreadable_file_error(error: BaseException, source: str) -> InputError | None:
    """An `InputError` naming the file if Spark failed because an input file is unreadable, else None."""
    text = str(error)
    causes = _CAUSE.findall(text)
    for pattern, message in _UNREADABLE:
        found = pattern.search(text)
        if found:
            fields = {k: v.strip() for k, v in found.groupdict().items()}
            for line in ("header", "schema"):  # files' first lines: data when a file has no header line
                if line in fields:
                    shown, others = column_names(fields[line].split(", "))
                    fields[line] = ", ".join(shown) + others
            file = fields["file"]
            # The first line of the deepest cause, cut short: a parser's error may go on to quote
            # what it read, and identifiers must not reach the logs.
            cause = (causes[-1] if causes else "no detail").replace(file, _user_name(file)).strip()[:300]
            return InputError(f"{_user_name(file)}: " + message.format(cause=cause, **fields))
    broken_stream = _BROKEN_STREAM.search(text)
    if broken_stream:
        cause = broken_stream.group(1).split(": ", 1)[1]
        file = _broken_gzip(source)
        if file:
            return InputError(f"{file}: unreadable file (truncated or corrupt gzip: {cause})")
        return InputError(f"{source}: a compressed file of this input is truncated or corrupt ({cause}); Spark does not say which")
    return None


@contextmanager
def naming_unreadable_files(source: str):
    """Turn Spark's failure on an unreadable input file into an `InputError` naming the file.

    Spark reads a file's footer (Parquet) or header (CSV) in the task that reads the file, so
    a truncated or mistyped file surfaces only when a job runs, as a Java stack trace. We let
    Spark find it rather than checking every file first (for example with pyarrow's
    `read_metadata`): a check on the driver costs one request per file, minutes for thousands
    of objects on S3 and a second S3 client beside Glue's, while Spark already opens every
    file, in parallel, and names the one it failed on. The happy path costs nothing (a listing
    refuses empty files before, see `_check_files`). Wrap the first action on the input
    (prepare counts the cached normalized rows); `source` is the input as the user named it.
    """
    try:
        yield
    except Exception as error:  # noqa: BLE001 - re-raised unless it is an unreadable file
        named = unreadable_file_error(error, source)
        if named is None:
            raise
        raise named from None


def _file_sizes(located: Located) -> dict[str, int]:
    """Every data file of the input, as the user names it, with its size in bytes.

    One listing request per 1,000 objects on S3 (Spark lists them the same way), nothing per file.
    """
    if storage.is_s3(located.path):
        parsed = urlparse(located.path)
        prefix = parsed.path.lstrip("/")
        objects = {item["Key"]: item["Size"] for item in s3.objects(parsed.netloc, prefix)}
        folder = prefix.rstrip("/") + "/"
        return {
            f"{located.source.rstrip('/')}/{key[len(folder):]}" if key != prefix else located.source: size
            for key, size in objects.items()
            if (key == prefix or key.startswith(folder)) and not key.endswith("/")
            and not Path(key).name.startswith(("_", "."))
        }
    root = Path(located.path)
    if root.is_file():
        return {located.source: root.stat().st_size}
    return {f"{located.source.rstrip('/')}/{p.relative_to(root)}": p.stat().st_size for p in _data_files(root)}


def _check_files(located: Located, data_format: str) -> None:
    """Refuse an input without data files, and empty files that cannot be empty.

    A Parquet file has a footer and a gzip file a header: one of 0 bytes is a write that did not
    finish. Spark skips such a file unless it is the one it reads the schema from; skipping it
    could turn the rows it should have held into removals (mirror mode), so it stops the run.
    An empty CSV or JSON Lines file is a valid file without rows.
    """
    if not storage.is_s3(located.path) and not Path(located.path).exists():
        raise InputError(f"{located.source}: no such file or directory")
    sizes = _file_sizes(located)
    if not sizes:
        raise InputError(f"{located.source}: no data files in this directory")
    for name, size in sorted(sizes.items()):
        if size == 0 and (data_format == "parquet" or name.endswith(".gz")):
            raise InputError(f"{name}: unreadable file (0 bytes; a {'gzip' if name.endswith('.gz') else 'Parquet'} file is never empty, so it was not written completely)")


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


def _check_parquet_columns(located: Located, contract: StructType, optional: set[str]) -> None:
    """Spark takes a Parquet folder's schema from one file and reads a column another file lacks
    as nulls; check each local file's footer, so a file without a contract column is named."""
    root = Path(located.path)
    for file in [root] if root.is_file() else _data_files(root):
        try:
            names = pq.read_schema(file).names
        except (OSError, ValueError, pa.ArrowException):
            continue   # an unreadable file is named when Spark reads it (naming_unreadable_files)
        name = located.source if root.is_file() else f"{located.source.rstrip('/')}/{file.relative_to(root)}"
        _require_columns(name, names, contract, optional)


def _parquet_read_schema(inferred: StructType, consent_columns: tuple[str, ...] = ()) -> StructType:
    """The schema every Parquet file is read with: the contract's strings, and updated_at as found.

    Spark infers the schema from one file; reading with an explicit one makes it check every
    file against it, so a file whose `user_id` is an int64 is named (naming_unreadable_files)
    instead of being cast to digits here and failing in another file there. Timestamps with
    and without a time zone (`isAdjustedToUTC`) both read as `timestamp`.
    """
    fields = [StructField(c, StringType()) for c in STRING_COLUMNS + consent_columns]
    if "updated_at" in inferred.fieldNames():
        found = inferred["updated_at"].dataType
        fields.append(StructField("updated_at", TimestampType() if isinstance(found, (TimestampType, TimestampNTZType)) else found))
    return StructType(fields)


def _json_container(column: str) -> Column:
    """Spark hands a JSON object or array found where the schema says string as its JSON text:
    '{"a":1}' would become an external id. Such a value (or a string holding one) is refused."""
    looks_like_one = F.col(column).rlike(r"^[\[{]")
    is_one = F.json_object_keys(column).isNotNull() | F.json_array_length(column).isNotNull()
    return F.when(looks_like_one & is_one, F.lit(f"{column} is a JSON object or array, expected a string"))


def read_membership(spark: SparkSession, path: str, data_format: str | None = None, consent_columns: tuple[str, ...] = ()) -> DataFrame:
    """Membership rows with `source_file` and `read_error` (null when the record parsed).

    `consent_columns`: the consent columns the config reads (strings, required in every file),
    returned under `consent_signals.carried` names so they never clash with ours. Other extra
    columns are ignored. The Spark job that first reads the rows should run inside
    `naming_unreadable_files`.
    """
    located = localize(spark, path)
    data_format = data_format or detect_format(located.path)
    _check_files(located, data_format)
    contract = StructType(MEMBERSHIP.fields + [StructField(c, StringType()) for c in consent_columns])
    try:
        with naming_unreadable_files(located.source):
            if data_format == "parquet":
                inferred = spark.read.parquet(located.path)
                _require_columns(located.source, inferred.columns, contract, {"updated_at"})
                if not storage.is_s3(located.path):
                    _check_parquet_columns(located, contract, {"updated_at"})
                _refuse_nested(located, inferred.schema, contract)
                raw = spark.read.schema(_parquet_read_schema(inferred.schema, consent_columns)).parquet(located.path)
                read_error = F.lit(None).cast("string")
            else:
                if data_format == "jsonl" and not storage.is_s3(located.path):
                    _check_json_lines_keys(located, contract, {"updated_at"})
                raw = _read_text_format(spark, located, data_format, contract, {"updated_at"})
                read_error = F.col(CORRUPT)
                if data_format == "jsonl":
                    read_error = F.coalesce(read_error, *[_json_container(c) for c in STRING_COLUMNS + consent_columns])
    except AnalysisException as error:
        raise InputError(f"{located.source}: cannot read as {data_format}: {error}") from None
    if "updated_at" not in raw.columns:
        raw = raw.withColumn("updated_at", F.lit(None).cast("timestamp"))
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
        *[F.col(c).cast("string").alias(carried(c)) for c in consent_columns],
    )


def _refuse_nested(located: Located, schema: StructType, contract: StructType) -> None:
    for field in contract.fields:
        if field.name in schema.fieldNames() and schema[field.name].dataType.typeName() in ("struct", "array", "map"):
            raise InputError(f"{located.source}: column {field.name!r} is {schema[field.name].dataType.simpleString()}, expected a scalar")


@dataclass(frozen=True)
class Consent:
    """Consent rows and the rows kept aside because their scope names no configured destination."""

    rows: DataFrame                  # user_id, scope
    unknown_scopes: dict[str, int]   # scope -> rows


# A shared consent table names a handful of destinations; thousands of distinct scopes mean its
# columns are not what we think (user ids read as scopes), and its opt-outs would go unapplied.
MAX_UNKNOWN_SCOPES = 100


def read_consent(spark: SparkSession, path: str, known_scopes: set[str], data_format: str | None = None) -> Consent:
    """Consent rows (`user_id`, `scope`), stripped and with lower-case scopes.

    Unlike membership rows, a consent row that cannot be parsed, has no user, or has a scope
    that is neither `*` nor shaped like a destination id might be an opt-out we cannot honour:
    any such row stops the run, naming the file (never quoting a malformed scope, which may be
    an identifier in the wrong column). A row whose scope names a destination this config does
    not have (another team's, one removed since) is counted per scope, not fatal: consent
    tables are shared, and one retired destination must not stop every other's delivery.
    """
    located = localize(spark, path)
    data_format = data_format or detect_format(located.path)
    _check_files(located, data_format)
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
    scope_is_readable = (F.col("scope") == "*") | F.coalesce(F.col("scope").rlike(DESTINATION_ID), F.lit(False))
    problem = (
        F.when(F.col(CORRUPT).isNotNull(), F.lit("unreadable record"))
        .when(F.coalesce(F.col("user_id"), F.lit("")) == "", F.lit("no user_id"))
        .when(F.coalesce(F.col("scope"), F.lit("")) == "", F.lit("no scope"))
        .when(~scope_is_readable, F.lit("a scope that is not '*' or a destination id"))
    )
    with naming_unreadable_files(located.source):
        broken = consent.select("file", problem.alias("problem")).filter(F.col("problem").isNotNull()).limit(5).collect()
    if broken:
        examples = ", ".join(f"{row.file} ({row.problem})" for row in broken)
        raise InputError(f"consent rows that may be opt-outs but cannot be honoured: {examples}; fix them before delivering")
    names_unknown_destination = ~F.col("scope").isin("*", *sorted(known_scopes))
    unknown = consent.filter(names_unknown_destination).groupBy("scope").count().limit(MAX_UNKNOWN_SCOPES + 1).collect()
    if len(unknown) > MAX_UNKNOWN_SCOPES:
        raise InputError(f"{located.source}: consent rows name more than {MAX_UNKNOWN_SCOPES} scopes that are no configured destination "
                         f"{sorted(known_scopes)}; are its columns user_id and scope?")
    return Consent(consent.select("user_id", "scope"), {row.scope: row["count"] for row in sorted(unknown)})
