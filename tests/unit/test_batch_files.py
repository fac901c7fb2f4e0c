"""Batches cut from their files: right members, each file decoded once per run of batches."""
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audience_relay.pipeline import batch_files
from audience_relay.pipeline.batch_files import BatchFileReader


def _file(path, batches: dict[int, list[tuple[str, str]]]) -> str:
    rows = [(n, t, k) for n, members in batches.items() for t, k in members]
    table = pa.table({"batch_number": [r[0] for r in rows], "id_type": [r[1] for r in rows], "match_key": [r[2] for r in rows],
                      "source_rows": [1] * len(rows)})
    pq.write_table(table, path)
    return str(path)


def test_batches_come_sorted_from_one_decoded_file(tmp_path, monkeypatch):
    first = _file(tmp_path / "a.parquet", {0: [("phone", "p1"), ("email", "e2"), ("email", "e1")], 1: [("email", "e3")]})
    second = _file(tmp_path / "b.parquet", {2: [("maid", "m1")]})
    reads = []
    real_read = batch_files.pq.read_table
    monkeypatch.setattr(batch_files.pq, "read_table", lambda path, **kw: reads.append(path) or real_read(path, **kw))
    reader = BatchFileReader()
    assert reader.members(first, 0) == [("email", "e1"), ("email", "e2"), ("phone", "p1")]
    assert reader.members(first, 1) == [("email", "e3")]
    assert reader.members(second, 2) == [("maid", "m1")]
    assert reader.members(second, 7) == []
    assert reads == [first, second]


def test_an_unreadable_file_raises_and_is_not_kept(tmp_path):
    good = _file(tmp_path / "a.parquet", {0: [("email", "e1")]})
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    reader = BatchFileReader()
    assert reader.members(good, 0) == [("email", "e1")]
    with pytest.raises(Exception):
        reader.members(str(broken), 0)
    with pytest.raises(Exception):
        reader.members(str(broken), 1)  # tried again, not served from the previous file
    assert reader.members(good, 0) == [("email", "e1")]
