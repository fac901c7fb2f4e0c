"""The prepare benchmark's peers compute what prepare computes: checked on a small input."""
import pytest

from bench import prepare as bench

pytestmark = pytest.mark.integration


def test_the_duckdb_peer_and_ours_agree_on_adds_and_removes_for_both_days(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "DATA", tmp_path / "data")
    days = bench.ensure_data(3000)
    ours = bench.ours(days, tmp_path / "ours", "local[2]")
    peer = bench.duckdb_peer(days, tmp_path / "duckdb", 2)
    for day in ("day1", "day2"):
        expected = bench.fingerprint(ours[day][1])
        assert expected and bench.fingerprint(peer[day][1]) == expected
    assert {op for _, _, op, *_ in bench.fingerprint(ours["day2"][1])} == {"add", "remove"}  # day 2 is a delta
    assert ours["day1"][0].phases and ours["day1"][0].shuffle_mb > 0
