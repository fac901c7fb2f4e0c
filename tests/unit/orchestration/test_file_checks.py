"""Each landed file is judged on its own, from S3, before it may join a window."""
import gzip
import io

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from audience_relay.orchestration import file_checks
from audience_relay.orchestration.file_checks import HEAD_BYTES, Admitted, LandedFile, OutOfTime, Rejected, Superseded, check_file

HEADER = b"user_id,id_type,id_value,segment_id,updated_at\n"
ROW = b"u1,email,someone@example.com,s1,2026-11-30T00:00:00Z\n"
LIMIT = 10_000_000


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="lake")
        yield client


def landed(s3, key: str, body: bytes) -> LandedFile:
    etag = s3.put_object(Bucket="lake", Key=key, Body=body)["ETag"].strip('"')
    return LandedFile("lake", key, etag, len(body), "2026-12-01T10:00:00.000Z")


def parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def reason(s3, key: str, body: bytes, limit: int = LIMIT) -> str:
    with pytest.raises(Rejected) as rejected:
        check_file(s3, landed(s3, key, body), limit)
    return str(rejected.value)


def test_good_files_of_every_format_pass_with_the_shape_prepare_reads(s3):
    strings = {"user_id": ["u1"], "id_type": ["email"], "id_value": ["a@b.c"], "segment_id": ["s1"]}
    csv_shape = Admitted("csv", HEADER.decode().strip())
    assert check_file(s3, landed(s3, "in/a.csv.gz", gzip.compress(HEADER + ROW)), LIMIT) == csv_shape
    assert check_file(s3, landed(s3, "in/a.csv", HEADER + ROW), LIMIT) == csv_shape
    assert check_file(s3, landed(s3, "in/a.jsonl", b'{"user_id": "u1", "id_type": "email", "id_value": "x", "segment_id": "s"}\n'), LIMIT) == Admitted("jsonl")
    assert check_file(s3, landed(s3, "in/a.parquet", parquet(pa.table(strings))), LIMIT) == Admitted("parquet")
    # pandas categoricals are dictionary-encoded strings, which Spark reads as strings.
    categorical = pa.table({k: pa.array(v).dictionary_encode() for k, v in strings.items()})
    assert check_file(s3, landed(s3, "in/c.parquet", parquet(categorical)), LIMIT) == Admitted("parquet")
    # `cat a.gz b.gz` is one valid gzip file (gzip -d reads both members).
    two_members = gzip.compress(HEADER + ROW) + gzip.compress(ROW)
    assert check_file(s3, landed(s3, "in/b.csv.gz", two_members), LIMIT) == csv_shape
    assert check_file(s3, landed(s3, "in/empty.jsonl", b"\n\n"), LIMIT) == Admitted("jsonl")   # a file without rows
    # A character cut by the 64 KiB read is not a decoding error.
    long_row = HEADER + ("é" * HEAD_BYTES).encode()
    assert check_file(s3, landed(s3, "in/long.csv", long_row[: HEAD_BYTES + 1]), LIMIT) == csv_shape


def test_the_gzip_stream_is_checked_to_its_end_in_any_chunk_size(s3, monkeypatch):
    whole = gzip.compress(HEADER + ROW * 50) + gzip.compress(ROW * 20)
    for chunk in (1, 2, 7, 64):
        monkeypatch.setattr(file_checks, "STREAM_CHUNK", chunk)
        assert check_file(s3, landed(s3, "in/a.csv.gz", whole), LIMIT).data_format == "csv"
        assert "truncated" in reason(s3, "in/cut.csv.gz", whole[:-9])
    with pytest.raises(OutOfTime):
        check_file(s3, landed(s3, "in/slow.csv.gz", whole), LIMIT, deadline=0.0)


def test_a_broken_or_mistyped_file_is_rejected_with_its_reason(s3):
    whole = gzip.compress(HEADER + ROW * 5000)
    assert "truncated" in reason(s3, "in/cut.csv.gz", whole[: len(whole) // 2])
    assert "not gzip" in reason(s3, "in/plain.csv.gz", HEADER + ROW)
    assert "corrupt" in reason(s3, "in/garbage.csv.gz", b"\x1f\x8b" + b"\x00" * 40)
    assert "empty file" in reason(s3, "in/zero.csv", b"")
    assert "over the 100-byte limit" in reason(s3, "in/big.csv", HEADER + ROW * 10, limit=100)
    assert "unknown file type" in reason(s3, "in/a.xlsx", b"PK")
    assert "not UTF-8" in reason(s3, "in/latin.csv", "user_id,id_typé\n".encode("latin-1") + b"x" * 10)
    assert "no header line" in reason(s3, "in/blank.csv", b"\n\n")
    assert "longer than" in reason(s3, "in/long.csv", b"x" * (HEAD_BYTES + 10))
    assert "not a JSON object" in reason(s3, "in/a.json", b"[1, 2]\n")


def test_schema_problems_name_the_columns_and_never_quote_data(s3):
    renamed = reason(s3, "in/renamed.csv", b"user_id,id_type,value,segment_id\n" + ROW)
    assert renamed == "missing required column(s) ['id_value']; found ['user_id', 'id_type', 'segment_id'] and 1 other name(s), not shown (they may be data, not a header)"
    # No header: the first row is taken as one, and its identifiers must not reach logs or the DLQ,
    # not even one that looks like a column name (an external id, a user name).
    headless = reason(s3, "in/headless.csv.gz", gzip.compress(b"jsmith,external_id,JaneDoe,seg\n" * 3))
    assert "missing required column(s)" in headless and "jsmith" not in headless and "JaneDoe" not in headless
    # Spark reads ' id_type' as a column of that name: prepare would not find id_type.
    assert "missing required column(s) ['id_type']" in reason(s3, "in/spaced.csv", b"user_id, id_type,id_value,segment_id\n")
    typed = parquet(pa.table({"user_id": [1], "id_type": ["email"], "id_value": ["x"], "segment_id": ["s"]}))
    assert reason(s3, "in/typed.parquet", typed) == "column 'user_id' is stored as int64, expected string"
    good = parquet(pa.table({"user_id": ["u"], "id_type": ["email"], "id_value": ["x"], "segment_id": ["s"]}))
    assert "no PAR1 magic" in reason(s3, "in/cut.parquet", good[:-20])
    assert "not a Parquet file" in reason(s3, "in/tiny.parquet", b"PAR1")
    huge_footer = b"PAR1" + b"\0" * 20 + (2**31).to_bytes(4, "little") + b"PAR1"
    assert "unreadable Parquet footer (length 2147483648" in reason(s3, "in/lying.parquet", huge_footer)


def test_a_file_overwritten_or_deleted_since_its_event_is_superseded_not_judged(s3):
    old = landed(s3, "in/a.csv", b"not even a header\n")
    s3.put_object(Bucket="lake", Key="in/a.csv", Body=HEADER + ROW)   # the newer version has its own event
    with pytest.raises(Superseded, match="changed after its event"):
        check_file(s3, old, LIMIT)
    gone = landed(s3, "in/b.csv", HEADER)
    s3.delete_object(Bucket="lake", Key="in/b.csv")
    with pytest.raises(Superseded, match="no longer exists"):
        check_file(s3, gone, LIMIT)
