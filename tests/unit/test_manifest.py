import pytest

from audience_relay.pipeline.manifest import batch_list
from audience_relay.transforms.schemas import BATCHED


def _write(spark, rows, path):
    spark.createDataFrame([(*row, None, None) for row in rows], BATCHED).coalesce(1).write.mode("append").partitionBy("destination_id", "audience_id", "op").parquet(path)


def test_batches_are_listed_with_size_file_and_checksum(spark, tmp_path):
    import hashlib

    path = str(tmp_path / "runs" / "r1" / "batches")
    _write(spark, [("d", "a", "add", 0, "email", "k2", 1), ("d", "a", "add", 0, "email", "k1", 2), ("d", "a", "add", 1, "phone", "k3", 1)], path)
    batches = batch_list(spark, path, "r1", {"d": 2})
    assert [(b["batch_number"], b["ids"], b["rows"]) for b in batches] == [(0, 2, 3), (1, 1, 1)]
    assert batches[0]["checksum"] == hashlib.sha256(b"email:k1\nemail:k2").hexdigest()
    assert batches[0]["file"].startswith("batches/destination_id=d/audience_id=a/op=add/part-")


def test_a_batch_spread_over_two_files_is_refused(spark, tmp_path):
    path = str(tmp_path / "runs" / "r1" / "batches")
    _write(spark, [("d", "a", "add", 0, "email", "k1", 1)], path)
    _write(spark, [("d", "a", "add", 0, "email", "k2", 1)], path)
    with pytest.raises(RuntimeError, match="batch d/a/add/0 has 2 ids across several files"):
        batch_list(spark, path, "r1", {"d": 10})


def test_a_batch_above_the_maximum_is_refused(spark, tmp_path):
    path = str(tmp_path / "runs" / "r1" / "batches")
    _write(spark, [("d", "a", "add", 0, "email", f"k{i}", 1) for i in range(3)], path)
    with pytest.raises(RuntimeError, match="batch d/a/add/0 has 3 ids in one file; expected at most 2"):
        batch_list(spark, path, "r1", {"d": 2})
