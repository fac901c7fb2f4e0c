"""Prepare's passes over its inputs, counted from Spark's own event log of a real run (day 1, and
day 2 against day 1's snapshot): every input file is read once, and the run takes at most a fixed
number of Spark jobs, so a change that adds a pass over the data fails here rather than only in
the benchmark. The limits are today's counts; lower them when a change removes passes."""
import pytest

from bench import prepare as bench
from audience_relay.cli.main import main

pytestmark = pytest.mark.integration

MAX_JOBS = {"day1": 42, "day2": 42}   # 63 before the input counts took one aggregate (a5ba741), 49 before members and withdrawals did;
# the rejected rows' shuffle (so the cached input is read in parallel, not in one task) is one job
RECORDS = 3000


@pytest.fixture(scope="module")
def measured(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("passes")
    days = {"day1": root / "day1", "day2": root / "day2"}
    assert main(["generate", "--records", str(RECORDS), "--out", str(days["day1"])]) == 0   # in this process's Spark
    assert main(["generate", "--previous", str(days["day1"]), "--out", str(days["day2"])]) == 0
    return days, bench.ours(days, root / "ours", "local[2]")


@pytest.mark.parametrize("day", ["day1", "day2"])
def test_each_input_file_is_read_once(measured, day):
    days, runs = measured
    work = runs[day][0].spark
    membership, consent = (days[day] / name for name in ("membership", "consent"))
    read = {folder.removeprefix("file:"): rows for folder, rows in work.rows_scanned.items()}
    assert read[str(membership)] == bench.input_rows(days[day]), work.rows_scanned
    assert read[str(consent)] == consent_rows(consent), work.rows_scanned


@pytest.mark.parametrize("day", ["day1", "day2"])
def test_a_run_takes_at_most_a_fixed_number_of_spark_jobs(measured, day):
    work = measured[1][day][0].spark
    assert 0 < work.jobs <= MAX_JOBS[day], f"{work.jobs} Spark jobs ({work.stages} stages); at most {MAX_JOBS[day]}"


def test_the_benchmark_measures_the_run(measured):
    """The harness's figures are there (phases, shuffle, memory, CPU), and day 1 is a full load."""
    for day, (run, batches) in measured[1].items():
        assert run.phases and run.shuffle_mb > 0 and run.peak_rss_mb > 0 and run.cpu_seconds > 0 and run.spark.stages >= run.spark.jobs
    assert {op for _, _, op, *_ in bench.fingerprint(measured[1]["day1"][1])} == {"add"}


def consent_rows(folder) -> int:
    import duckdb

    return duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder / '**' / '*.parquet'}')").fetchone()[0]
