"""`python -m bench.cluster --rows 10M`: prepare on a Spark standalone cluster of separate JVMs.

The local benchmarks run Spark in one JVM (local[N]): the driver and the executors share a heap,
so a job that only works because something the driver holds is visible to the tasks would pass
there and fail on Glue or EMR. Here the benchmark starts a standalone master and two workers of
one core each from the pip-installed PySpark (separate JVMs, each executor its own process),
and submits the same job script a cluster runs, `jobs/prepare.py`, with `spark-submit` in client
mode, day 1 then day 2 (day 1 committed first, as a delivery would). Measured per day: wall time,
rows/s/core, the peak RSS of each executor's process tree (its JVM and its Python workers),
shuffle bytes, Spark jobs and stages. The adds and removes must equal the DuckDB peer's (an
independent implementation) or the run counts for nothing.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
from datetime import date
from pathlib import Path

import psutil

from audience_relay.cli.main import record_count
from audience_relay.testing.emulators.spark_cluster import running_executors, standalone_cluster, submit_command
from bench.measure import Measured, run_measured
from bench.prepare import RESULTS, WORK, commit_as_delivered, duckdb_peer, ensure_data, fingerprint, input_name, input_rows

JOBS = Path(__file__).resolve().parent.parent / "jobs"


def prepare_on_cluster(days: dict[str, Path], out: Path, master_url: str, executor_memory: str, driver_memory: str) -> dict[str, tuple[Measured, Path]]:
    """jobs/prepare.py through spark-submit for each day; each day is committed before the next, as a delivery would."""
    results = {}
    submit = submit_command(master_url, executor_memory, driver_memory)
    for day, path in days.items():
        measured = run_measured(
            [str(JOBS / "prepare.py"), "--input", str(path / "membership"), "--consent", str(path / "consent"), "--out", str(out),
             "--run-id", day], event_log=out / "events" / day, submit=submit, executors=running_executors)
        commit_as_delivered(out, day)
        results[day] = (measured, out / "runs" / day / "batches")
    return results


def duckdb_batches(days: dict[str, Path], name: str, work: Path) -> dict[str, Path]:
    """The DuckDB peer's batches of each day: those `bench.prepare` left for this input, else a run of the peer."""
    left = {day: WORK / name / "duckdb" / day / "batches" for day in days}
    if all(folder.is_dir() for folder in left.values()):
        return left
    return {day: batches for day, (_, batches) in duckdb_peer(days, work / "duckdb", 2).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--rows", type=record_count, required=True, help="generated rows per day: 1M, 10M, 200M")
    parser.add_argument("--executor-memory", default="2g", help="heap of each one-core executor (default 2g: a G.1X worker's heap per core)")
    parser.add_argument("--driver-memory", default="2g")
    parser.add_argument("--skip-check", action="store_true", help="do not run the DuckDB peer to check the adds and removes")
    args = parser.parse_args(argv)
    days = ensure_data(args.rows)
    name = input_name(args.rows, None)
    rows = {day: input_rows(path) for day, path in days.items()}
    work = WORK / f"cluster-{name}"
    shutil.rmtree(work, ignore_errors=True)
    with standalone_cluster(work / "cluster", worker_memory=args.executor_memory) as master_url:
        ours = prepare_on_cluster(days, work / "ours", master_url, args.executor_memory, args.driver_memory)
    expected = None if args.skip_check else {day: fingerprint(batches) for day, batches in duckdb_batches(days, name, work).items()}
    table = []
    for day, (measured, batches) in ours.items():
        equal = None if expected is None else fingerprint(batches) == expected[day]
        table.append({
            "day": day, "rows": rows[day], "cores": 2, "seconds": measured.seconds,
            "rows_per_s_per_core": round(rows[day] / measured.seconds / 2) if equal is not False else None,
            "cpu_seconds": measured.cpu_seconds, "driver_peak_rss_mb": measured.peak_rss_mb,
            "executor_peak_rss_mb": measured.executor_peak_rss_mb, "shuffle_mb": measured.shuffle_mb,
            "jobs": measured.spark.jobs, "stages": measured.spark.stages, "equal_to_duckdb": equal, "phases": measured.phases,
        })
    machine = {"cores": psutil.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30), "cpu": platform.processor() or platform.machine(),
               "date": date.today().isoformat(), "python": platform.python_version(), "executor_memory": args.executor_memory}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"cluster-{name}.json").write_text(json.dumps({"machine": machine, "rows": args.rows, "results": table}, indent=2) + "\n")
    print(render(table, machine, name))
    return 0 if all(r["equal_to_duckdb"] is not False for r in table) else 1


def render(table: list[dict], machine: dict, name: str) -> str:
    lines = [f"prepare on a standalone cluster (2 workers x 1 core, executor heap {machine['executor_memory']}), input {name}, {machine['date']}",
             "| day | rows | s | rows/s/core | CPU s | peak RSS per executor MB | driver peak RSS MB | shuffle MB | jobs | stages | same adds/removes as DuckDB |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in table:
        rate = f"{r['rows_per_s_per_core']:,}" if r["rows_per_s_per_core"] else "not counted"
        executors = ", ".join(f"{mb:,.0f}" for mb in r["executor_peak_rss_mb"].values())
        check = {True: "yes", False: "NO", None: "not checked"}[r["equal_to_duckdb"]]
        lines.append(f"| {r['day']} | {r['rows']:,} | {r['seconds']} | {rate} | {r['cpu_seconds']} | {executors} | {r['driver_peak_rss_mb']:,} | "
                     f"{r['shuffle_mb']} | {r['jobs']} | {r['stages']} | {check} |")
    lines.append("\nseconds per phase:")
    for r in table:
        lines.append(f"  {r['day']}: " + ", ".join(f"{k} {v} s" for k, v in r["phases"].items() if v > 0))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
