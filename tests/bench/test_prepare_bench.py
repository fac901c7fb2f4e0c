"""The prepare benchmark's peers compute what prepare computes: checked on a small input."""
import pytest

from bench import prepare as bench
from jobs.cli import main

pytestmark = pytest.mark.integration


def test_the_duckdb_peer_and_ours_agree_on_adds_and_removes_for_both_days(spark, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "DATA", tmp_path / "data")
    generated = tmp_path / "data" / "3000"  # in this process's Spark: the benchmark starts one per day
    assert main(["generate", "--records", "3000", "--out", str(generated / "day1")]) == 0
    assert main(["generate", "--previous", str(generated / "day1"), "--out", str(generated / "day2")]) == 0
    days = bench.ensure_data(3000)
    assert days["day1"] == generated / "day1"
    ours = bench.ours(days, tmp_path / "ours", "local[2]")
    peer = bench.duckdb_peer(days, tmp_path / "duckdb", 2)
    for day in ("day1", "day2"):
        expected = bench.fingerprint(ours[day][1])
        assert expected and bench.fingerprint(peer[day][1]) == expected
    assert {op for _, _, op, *_ in bench.fingerprint(ours["day2"][1])} == {"add", "remove"}  # day 2 is a delta
    assert ours["day1"][0].phases and ours["day1"][0].shuffle_mb > 0
