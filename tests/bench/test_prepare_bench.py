"""The prepare benchmark's harness. Its measure of a real prepare run is checked with prepare's
passes (tests/integration/test_prepare_passes.py); that the benchmark's peers compute what
prepare computes, on the two prepared days of tests/integration/test_prepare_two_days.py."""
import json

import pytest

from bench import prepare as bench
from bench.measure import Measured

pytestmark = pytest.mark.integration


def test_the_results_are_named_after_the_input_not_a_contender(tmp_path, monkeypatch):
    """The results file and the table's title name the input (`prepare-<rows>.json`), whatever
    contenders ran; the contenders' runs themselves are stood in for here."""
    days = {"day1": tmp_path / "day1", "day2": tmp_path / "day2"}
    runs = {day: (Measured(10.0, 100, 15.0, 1.0, {"read": 1.0}), tmp_path / day) for day in days}
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(bench, "WORK", tmp_path / "work")
    monkeypatch.setattr(bench, "ensure_data", lambda rows, share: days)
    monkeypatch.setattr(bench, "input_rows", lambda path: 1000)
    monkeypatch.setattr(bench, "ours", lambda days, out, master: runs)
    monkeypatch.setattr(bench, "duckdb_peer", lambda days, out, threads: runs)
    monkeypatch.setattr(bench, "sha256_limit", lambda sample: {"bytes": 25, "hashes_per_second_per_core": 1})
    monkeypatch.setattr(bench, "fingerprint", lambda batches: [("d", "a", "add", 1, 1)])
    monkeypatch.setattr(bench, "parquet_files", lambda root: (1, 1.0))
    assert bench.main(["--rows", "1000", "--skip", "local1,udf"]) == 0
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["prepare-1000.json"]
    saved = json.loads((tmp_path / "results" / "prepare-1000.json").read_text())
    assert [r["contender"] for r in saved["results"]] == ["ours local[2]"] * 2 + ["duckdb (2 threads)"] * 2
