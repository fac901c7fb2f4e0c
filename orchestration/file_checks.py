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

import csv
import json
import struct
import zlib
from dataclasses import dataclass

from botocore.exceptions import ClientError

from transforms.contract import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, format_of, missing_columns_error

HEAD_BYTES = 64 * 1024   # a header line or first record longer than this is refused
STREAM_CHUNK = 8 * 1024 * 1024
PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class LandedFile:
    """One object an S3 event named, at the version (ETag) the event saw."""

    bucket: str
    key: str
    etag: str   # without quotes, as S3 events give it
    size: int
    event_time: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class Rejected(Exception):
    """The file cannot be prepared; the message is the reason kept with it in quarantine."""


class Superseded(Exception):
    """The object changed or vanished after its event: a newer version has an event of its own."""


def check_file(s3, landed: LandedFile, max_bytes: int) -> str:
    """The file's format when it may join a window; raises Rejected (with the reason) or Superseded."""
    data_format = format_of(landed.key)
    if data_format is None:
        raise Rejected("unknown file type: the name must end in .parquet, .csv, .jsonl, .ndjson or .json (optionally .gz)")
    if landed.size == 0:
        raise Rejected("empty file (0 bytes): nothing was written, or the write did not finish")
    if landed.size > max_bytes:
        raise Rejected(f"{landed.size} bytes, over the {max_bytes}-byte limit for one file")
    if data_format == "parquet":
        _check_parquet(s3, landed)
    elif landed.key.endswith(".gz"):
        _check_text(_gunzip_head(s3, landed), data_format)
    else:
        _check_text(_read(s3, landed, f"bytes=0-{HEAD_BYTES - 1}"), data_format)
    return data_format


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


def _gunzip_head(s3, landed: LandedFile) -> bytes:
    """The first HEAD_BYTES of the decompressed text. The whole file is streamed through zlib, so a
    truncated or corrupt file (the usual broken upload) is found here, not in the window's run."""
    body = _get(s3, landed)["Body"]
    inflater, head = zlib.decompressobj(wbits=31), b""
    try:
        for number, chunk in enumerate(iter(lambda: body.read(STREAM_CHUNK), b"")):
            if number == 0 and not chunk.startswith(b"\x1f\x8b"):
                raise Rejected("named .gz but not gzip-compressed")
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
    if not inflater.eof:
        raise Rejected("gzip stream ends early: the file is truncated")
    return head


def _first_line(data: bytes) -> str | None:
    """The first non-empty line, decoded; None for a file of blank lines."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        if error.start < len(data) - 3:   # not just a character cut by the read's end
            raise Rejected(f"not UTF-8 text (byte {error.start})") from None
        text = data[: error.start].decode("utf-8-sig")
    lines = text.splitlines()
    complete = lines if len(data) < HEAD_BYTES or text.endswith(("\n", "\r")) else lines[:-1]
    for line in complete:
        if line.strip():
            return line
    if any(line.strip() for line in lines):
        raise Rejected(f"the first line is longer than {HEAD_BYTES} bytes")
    return None


def _check_text(head: bytes, data_format: str) -> None:
    line = _first_line(head)
    if line is None:
        if data_format == "csv":
            raise Rejected("no header line")
        return   # a JSON Lines file without records is a file without rows
    if data_format == "csv":
        found = [name.strip() for name in next(csv.reader([line]))]
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
    if footer_length > landed.size - 12:
        raise Rejected("not a Parquet file: the footer length points outside the file")
    footer = _read(s3, landed, f"bytes={landed.size - 8 - footer_length}-{landed.size - 9}")
    try:
        schema = pq.read_schema(pa.BufferReader(PARQUET_MAGIC + footer + tail))
    except (pa.ArrowException, OSError) as error:
        raise Rejected(f"unreadable Parquet footer ({str(error)[:200]})") from None
    if error := missing_columns_error(schema.names):
        raise Rejected(error)
    for name in REQUIRED_COLUMNS:
        found = schema.field(name).type
        if not (pa.types.is_string(found) or pa.types.is_large_string(found)):
            raise Rejected(f"column {name!r} is stored as {found}, expected string")
    for name in OPTIONAL_COLUMNS:
        if name in schema.names and pa.types.is_nested(schema.field(name).type):
            raise Rejected(f"column {name!r} is stored as {schema.field(name).type}, expected a timestamp or string")
