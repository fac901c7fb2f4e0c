"""Each landed file is judged on its own, from S3, before it may join a window."""
import gzip
import io

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from orchestration.file_checks import HEAD_BYTES, LandedFile, Rejected, Superseded, check_file

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


def test_good_files_of_every_format_pass_with_their_format(s3):
    strings = {"user_id": ["u1"], "id_type": ["email"], "id_value": ["a@b.c"], "segment_id": ["s1"]}
    assert check_file(s3, landed(s3, "in/a.csv.gz", gzip.compress(HEADER + ROW)), LIMIT) == "csv"
    assert check_file(s3, landed(s3, "in/a.csv", HEADER + ROW), LIMIT) == "csv"
    assert check_file(s3, landed(s3, "in/a.jsonl", b'{"user_id": "u1", "id_type": "email", "id_value": "x", "segment_id": "s"}\n'), LIMIT) == "jsonl"
    assert check_file(s3, landed(s3, "in/a.parquet", parquet(pa.table(strings))), LIMIT) == "parquet"
    # `cat a.gz b.gz` is one valid gzip file (gzip -d reads both members); and a BOM is not a column.
    two_members = gzip.compress(b"\xef\xbb\xbf" + HEADER + ROW) + gzip.compress(ROW)
    assert check_file(s3, landed(s3, "in/b.csv.gz", two_members), LIMIT) == "csv"
    assert check_file(s3, landed(s3, "in/empty.jsonl", b"\n\n"), LIMIT) == "jsonl"   # a file without rows


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
    assert renamed == "missing required column(s) ['id_value']; found ['user_id', 'id_type', 'value', 'segment_id']"
    # No header: the first row is taken as one, and its identifier must not reach logs or the DLQ.
    headless = reason(s3, "in/headless.csv.gz", gzip.compress(ROW * 3))
    assert "missing required column(s)" in headless and "example.com" not in headless and "not shown" in headless
    typed = parquet(pa.table({"user_id": [1], "id_type": ["email"], "id_value": ["x"], "segment_id": ["s"]}))
    assert reason(s3, "in/typed.parquet", typed) == "column 'user_id' is stored as int64, expected string"
    good = parquet(pa.table({"user_id": ["u"], "id_type": ["email"], "id_value": ["x"], "segment_id": ["s"]}))
    assert "no PAR1 magic" in reason(s3, "in/cut.parquet", good[:-20])
    assert "not a Parquet file" in reason(s3, "in/tiny.parquet", b"PAR1")


def test_a_file_overwritten_or_deleted_since_its_event_is_superseded_not_judged(s3):
    old = landed(s3, "in/a.csv", b"not even a header\n")
    s3.put_object(Bucket="lake", Key="in/a.csv", Body=HEADER + ROW)   # the newer version has its own event
    with pytest.raises(Superseded, match="changed after its event"):
        check_file(s3, old, LIMIT)
    gone = landed(s3, "in/b.csv", HEADER)
    s3.delete_object(Bucket="lake", Key="in/b.csv")
    with pytest.raises(Superseded, match="no longer exists"):
        check_file(s3, gone, LIMIT)
