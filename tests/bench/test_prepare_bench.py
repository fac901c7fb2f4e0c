"""The prepare benchmark's harness measures a real prepare run (phases, shuffle, memory).

That the benchmark's peers compute what prepare computes is checked on the two prepared days of
tests/integration/test_prepare_two_days.py, without starting prepare again here.
"""
import pytest

from bench import prepare as bench
from audience_relay.cli.main import main

pytestmark = pytest.mark.integration


def test_the_prepare_benchmark_measures_a_real_prepare_run(spark, tmp_path):
    day = tmp_path / "day1"
    assert main(["generate", "--records", "3000", "--out", str(day)]) == 0   # in this process's Spark
    measured, batches = bench.ours({"day1": day}, tmp_path / "ours", "local[2]")["day1"]
    assert measured.phases and measured.shuffle_mb > 0 and measured.peak_rss_mb > 0 and measured.cpu_seconds > 0
    assert {op for _, _, op, *_ in bench.fingerprint(batches)} == {"add"}   # day 1 is a full load
