"""Run a benchmark contender as a child process: wall time, peak memory, Spark shuffle bytes, output files."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil


@dataclass
class SparkWork:
    """What Spark ran, from its event log: jobs and stages run, shuffle bytes written, and the
    rows every file scan produced, by the folder it read (a folder read twice counts twice)."""

    jobs: int = 0
    stages: int = 0
    shuffle_mb: float = 0.0
    rows_scanned: dict[str, int] = field(default_factory=dict)


@dataclass
class Measured:
    seconds: float
    peak_rss_mb: float
    cpu_seconds: float = 0.0  # user + system of the whole process tree (sampled every 0.2 s)
    shuffle_mb: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    stdout: str = ""
    spark: SparkWork | None = None
    # On a cluster: each executor's peak RSS (its JVM and Python workers), by `app-id/executor-id`.
    executor_peak_rss_mb: dict[str, float] = field(default_factory=dict)


def _sample_tree(process: psutil.Process, cpu: dict[int, float]) -> int:
    """The tree's RSS now; records each member's CPU seconds so far in `cpu` (pid -> seconds)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
            times = member.cpu_times()
            cpu[member.pid] = times.user + times.system
        except psutil.Error:
            continue
    return total


def run_measured(argv: list[str], event_log: Path | None = None, env: dict[str, str] | None = None, submit: list[str] | None = None,
                 executors: Callable[[], dict[str, psutil.Process]] | None = None) -> Measured:
    """Run `argv` (a Python module or script of ours), sampling the RSS of its whole process tree.

    `submit`: a spark-submit command and its options, to run `argv` (a job script and its
    arguments) through instead of this interpreter; `executors`: finds the executor processes of
    a cluster, which are not the job's children: their trees are sampled each on its own, and
    their CPU counted with the job's.
    """
    environment = {**os.environ, **(env or {}), "PYSPARK_PYTHON": sys.executable}
    launcher = [sys.executable]
    if submit is not None:
        launcher = [*submit, *(["--conf", "spark.eventLog.enabled=true", "--conf", f"spark.eventLog.dir={event_log.resolve().as_uri()}"]
                                if event_log is not None else [])]
    if event_log is not None:
        event_log.mkdir(parents=True, exist_ok=True)
        if submit is None:
            inherited = environment.get("PYSPARK_SUBMIT_ARGS", "pyspark-shell")  # ends with the pyspark-shell resource
            environment["PYSPARK_SUBMIT_ARGS"] = (f"--conf spark.eventLog.enabled=true --conf spark.eventLog.dir={event_log.resolve().as_uri()} "
                                                  f"{inherited}")
    started = time.perf_counter()
    child = subprocess.Popen([*launcher, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    peak, cpu, executor_peaks, done = 0, {}, {}, threading.Event()

    def sample() -> None:
        nonlocal peak
        process = psutil.Process(child.pid)
        while not done.wait(0.2):
            try:
                peak = max(peak, _sample_tree(process, cpu))
            except psutil.Error:
                return
            for key, executor in (executors() if executors else {}).items():
                try:
                    executor_peaks[key] = max(executor_peaks.get(key, 0), _sample_tree(executor, cpu))
                except psutil.Error:
                    continue

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = child.communicate()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} exited {child.returncode}:\n{stderr[-3000:]}")
    phases = {}
    for line in (stderr + stdout).splitlines():   # spark-submit merges the Python driver's stderr into its stdout
        if line.startswith("{") and '"phase"' in line:
            record = json.loads(line)
            phases[record["phase"]] = record["seconds"]
    work = spark_work(event_log) if event_log else None
    return Measured(round(seconds, 2), round(peak / 2**20), round(sum(cpu.values()), 1), work.shuffle_mb if work else None, phases, stdout,
                    work, {key: round(rss / 2**20) for key, rss in sorted(executor_peaks.items())})


SCANNED_FOLDERS = re.compile(r"\[(.*)\]$")   # a scan's Location: InMemoryFileIndex(1 paths)[file:/a, file:/b]


def _scans(plan: dict, found: dict[int, str]) -> None:
    """Each file scan in a SQL plan: its output-rows accumulator id -> the folders it reads."""
    location = SCANNED_FOLDERS.search(plan.get("metadata", {}).get("Location", ""))
    if plan["nodeName"].startswith("Scan ") and location:
        for metric in plan["metrics"]:
            if metric["name"] == "number of output rows":
                found[metric["accumulatorId"]] = location.group(1)
    for child in plan["children"]:
        _scans(child, found)


def spark_work(event_log: Path) -> SparkWork:
    """Jobs, stages, shuffle bytes and rows scanned per folder, over every application in the event log folder."""
    work, scans, rows = SparkWork(), {}, {}
    written = 0
    for log in event_log.iterdir():
        with log.open() as lines:
            for line in lines:
                event = json.loads(line)
                kind = event["Event"]
                if kind == "SparkListenerJobStart":
                    work.jobs += 1
                elif kind == "SparkListenerStageSubmitted":
                    work.stages += 1
                elif kind.endswith(("SQLExecutionStart", "SQLAdaptiveExecutionUpdate")):
                    _scans(event["sparkPlanInfo"], scans)
                elif kind == "SparkListenerTaskEnd":
                    metrics = event.get("Task Metrics") or {}
                    written += (metrics.get("Shuffle Write Metrics") or {}).get("Shuffle Bytes Written", 0)
                    for accumulable in event["Task Info"].get("Accumulables", []):
                        if accumulable["ID"] in scans:   # a scan's rows: its plan was logged before its tasks ran
                            rows[accumulable["ID"]] = rows.get(accumulable["ID"], 0) + int(accumulable["Update"])
    for accumulator, folders in scans.items():
        work.rows_scanned[folders] = work.rows_scanned.get(folders, 0) + rows.get(accumulator, 0)
    work.shuffle_mb = round(written / 2**20, 1)
    return work


def parquet_files(root: Path) -> tuple[int, float]:
    """How many Parquet files under `root`, and their mean size in MB."""
    sizes = [p.stat().st_size for p in root.rglob("*.parquet")]
    return len(sizes), round(sum(sizes) / len(sizes) / 2**20, 2) if sizes else 0.0
