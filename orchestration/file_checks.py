"""Check one landed file on its own before it joins a window: its type, size and schema.

A window prepares its files in one Spark run, and one unreadable file stops that run for all of
them (prepare names it and exits 2). So the ingest Lambda reads each file from S3 first, without
Spark: the name must say a format of the data contract, the size must be within bounds, a gzip
file must decompress to its end, and the header (CSV), first record (JSON Lines) or footer
schema (Parquet) must hold the contract's columns. Every read pins the ETag the S3 event named
(`If-Match`): a file overwritten since is `Superseded`, not judged, because its new version has
its own event. Reasons never quote file content beyond what looks like a column name.
"""
from __future__ import annotations

import codecs
import csv
import json
import struct
import time
import zlib
from dataclasses import dataclass, field

from botocore.exceptions import ClientError

from audience_relay.transforms.contract import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, format_of, missing_columns_error

HEAD_BYTES = 64 * 1024   # a header line or first record longer than this is refused
STREAM_CHUNK = 8 * 1024 * 1024
MAX_FOOTER_BYTES = 16 * 1024 * 1024
PARQUET_MAGIC = b"PAR1"
UTF8_BOM = codecs.BOM_UTF8


@dataclass(frozen=True)
class LandedFile:
    """One object an S3 event named, at the version (ETag) the event saw; equal to another event's
    for the same version."""

    bucket: str
    key: str
    etag: str   # without quotes, as S3 events give it
    size: int = field(compare=False)
    event_time: str = field(compare=False)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class Rejected(Exception):
    """The file cannot be prepared; the message is the reason kept with it in quarantine."""


class Superseded(Exception):
    """The object changed or vanished after its event: a newer version has an event of its own."""


class OutOfTime(Exception):
    """The check did not finish before the caller's deadline; the file is judged again later."""


@dataclass(frozen=True)
class Admitted:
    """How prepare will read the file: files of one window are one input only if their shapes match
    (Spark reads every CSV file of an input with one header)."""

    data_format: str
    header: str | None = None   # a CSV file's header line, exactly


def check_file(s3, landed: LandedFile, max_bytes: int, deadline: float | None = None) -> Admitted:
    """How the file may join a window; raises Rejected (with the reason), Superseded, or OutOfTime
    once `time.monotonic()` passes `deadline` while a gzip file is being streamed."""
    data_format = format_of(landed.key)
    if data_format is None:
        raise Rejected("unknown file type: the name must end in .parquet, .csv, .jsonl, .ndjson or .json (optionally .gz)")
    if landed.size == 0:
        raise Rejected("empty file (0 bytes): nothing was written, or the write did not finish")
    if landed.size > max_bytes:
        raise Rejected(f"{landed.size} bytes, over the {max_bytes}-byte limit for one file")
    if data_format == "parquet":
        _check_parquet(s3, landed)
        return Admitted(data_format)
    head = _gunzip_head(s3, landed, deadline) if landed.key.endswith(".gz") else _read(s3, landed, f"bytes=0-{HEAD_BYTES - 1}")
    return Admitted(data_format, _check_text(head, data_format, complete=len(head) < HEAD_BYTES))


def _read(s3, landed: LandedFile, byte_range: str | None = None) -> bytes:
    return _get(s3, landed, byte_range)["Body"].read()


def _get(s3, landed: LandedFile, byte_range: str | None = None) -> dict:
    request = {"Bucket": landed.bucket, "Key": landed.key, "IfMatch": f'"{landed.etag}"'}
    if byte_range:
        request["Range"] = byte_range
    try:
        return s3.get_object(**request)
    except ClientError as error:
        code = error.response["Error"]["Code"]
        if code in ("PreconditionFailed", "412"):
            raise Superseded(f"{landed.uri} changed after its event (ETag {landed.etag})") from None
        if code in ("NoSuchKey", "404"):
            raise Superseded(f"{landed.uri} no longer exists") from None
        raise


def _gunzip_head(s3, landed: LandedFile, deadline: float | None) -> bytes:
    """The first HEAD_BYTES of the decompressed text. The whole file is streamed through zlib, so a
    truncated or corrupt file (the usual broken upload) is found here, not in the window's run.
    Memory stays bounded (one chunk in, one chunk out); time is bounded by `deadline`, which also
    stops a gzip bomb."""
    body = _get(s3, landed)["Body"]
    inflater, head, magic = zlib.decompressobj(wbits=31), b"", b""
    try:
        for chunk in iter(lambda: body.read(STREAM_CHUNK), b""):
            if len(magic) < 2:
                magic += chunk[: 2 - len(magic)]
                if len(magic) == 2 and magic != b"\x1f\x8b":
                    raise Rejected("named .gz but not gzip-compressed")
            if deadline is not None and time.monotonic() > deadline:
                raise OutOfTime(f"{landed.uri}: not streamed through before the deadline")
            while chunk:
                out = inflater.decompress(chunk, STREAM_CHUNK)   # bounded: a small file may inflate a lot
                head += out[: max(0, HEAD_BYTES - len(head))]
                chunk = inflater.unconsumed_tail
                if inflater.eof and inflater.unused_data:   # concatenated gzip members, as `cat a.gz b.gz`
                    chunk, inflater = inflater.unused_data, zlib.decompressobj(wbits=31)
    except zlib.error as error:
        raise Rejected(f"gzip stream is corrupt ({error})") from None
    finally:
        body.close()
    if not inflater.eof or len(magic) < 2:
        raise Rejected("gzip stream ends early: the file is truncated")
    return head


def _first_line(data: bytes, complete: bool) -> str | None:
    """The first non-empty line, decoded (without a byte-order mark); None for a file of blank
    lines. `complete`: `data` is the whole file, not its first HEAD_BYTES."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    body = data.removeprefix(UTF8_BOM)
    try:
        text = decoder.decode(body, final=complete)   # a character cut by the read's end waits
    except UnicodeDecodeError as error:
        raise Rejected(f"not UTF-8 text (byte {error.start + len(data) - len(body)})") from None
    lines = text.splitlines()
    whole_lines = lines if complete or text.endswith(("\n", "\r")) else lines[:-1]
    for line in whole_lines:
        if line.strip():
            return line
    if any(line.strip() for line in lines):
        raise Rejected(f"the first line is longer than {HEAD_BYTES} bytes")
    return None


def _check_text(head: bytes, data_format: str, complete: bool) -> str | None:
    """The CSV header line as prepare will read it; raises Rejected."""
    line = _first_line(head, complete)
    if line is None:
        if data_format == "csv":
            raise Rejected("no header line")
        return None   # a JSON Lines file without records is a file without rows
    if data_format == "csv":
        found = next(csv.reader([line]))   # as Spark reads it: ' id_type' is not 'id_type'
    else:
        try:
            record = json.loads(line)
        except ValueError:
            raise Rejected("the first line is not a JSON object") from None
        if not isinstance(record, dict):
            raise Rejected("the first line is not a JSON object")
        found = list(record)
    if error := missing_columns_error(found):
        raise Rejected(error)
    return line if data_format == "csv" else None


def _check_parquet(s3, landed: LandedFile) -> None:
    """Magic bytes at both ends and the footer's schema: required columns stored as strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if landed.size < 12:
        raise Rejected(f"not a Parquet file ({landed.size} bytes)")
    tail = _read(s3, landed, f"bytes={landed.size - 8}-{landed.size - 1}")
    if tail[4:] != PARQUET_MAGIC or _read(s3, landed, "bytes=0-3") != PARQUET_MAGIC:
        raise Rejected("not a Parquet file (no PAR1 magic): truncated or another format")
    (footer_length,) = struct.unpack("<I", tail[:4])
    if not 0 < footer_length <= min(landed.size - 12, MAX_FOOTER_BYTES):
        raise Rejected(f"unreadable Parquet footer (length {footer_length}; at most {MAX_FOOTER_BYTES} bytes within the file)")
    footer = _read(s3, landed, f"bytes={landed.size - 8 - footer_length}-{landed.size - 9}")
    try:
        schema = pq.read_schema(pa.BufferReader(PARQUET_MAGIC + footer + tail))
    except (pa.ArrowException, OSError):
        raise Rejected("unreadable Parquet footer (pyarrow cannot decode its metadata)") from None
    if error := missing_columns_error(schema.names):
        raise Rejected(error)
    for name in REQUIRED_COLUMNS:
        found = schema.field(name).type
        values = found.value_type if pa.types.is_dictionary(found) else found   # pandas categoricals: strings to Spark
        if not (pa.types.is_string(values) or pa.types.is_large_string(values)):
            raise Rejected(f"column {name!r} is stored as {found}, expected string")
    for name in OPTIONAL_COLUMNS:
        if name in schema.names and pa.types.is_nested(schema.field(name).type):
            raise Rejected(f"column {name!r} is stored as {schema.field(name).type}, expected a timestamp or string")
