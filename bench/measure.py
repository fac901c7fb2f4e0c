"""Run a benchmark contender as a child process: wall time, peak memory, Spark shuffle bytes, output files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass
class Measured:
    seconds: float
    peak_rss_mb: float
    cpu_seconds: float = 0.0  # user + system of the whole process tree (sampled every 0.2 s)
    shuffle_mb: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    stdout: str = ""


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


def run_measured(argv: list[str], event_log: Path | None = None, env: dict[str, str] | None = None) -> Measured:
    """Run `argv` (a Python module or script of ours), sampling the RSS of its whole process tree."""
    environment = {**os.environ, **(env or {}), "PYSPARK_PYTHON": sys.executable}
    if event_log is not None:
        event_log.mkdir(parents=True, exist_ok=True)
        inherited = environment.get("PYSPARK_SUBMIT_ARGS", "pyspark-shell")  # ends with the pyspark-shell resource
        environment["PYSPARK_SUBMIT_ARGS"] = (f"--conf spark.eventLog.enabled=true --conf spark.eventLog.dir={event_log.resolve().as_uri()} "
                                              f"{inherited}")
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    peak, cpu, done = 0, {}, threading.Event()

    def sample() -> None:
        nonlocal peak
        process = psutil.Process(child.pid)
        while not done.wait(0.2):
            try:
                peak = max(peak, _sample_tree(process, cpu))
            except psutil.Error:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = child.communicate()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} exited {child.returncode}:\n{stderr[-3000:]}")
    phases = {}
    for line in stderr.splitlines():
        if line.startswith("{") and '"phase"' in line:
            record = json.loads(line)
            phases[record["phase"]] = record["seconds"]
    return Measured(round(seconds, 2), round(peak / 2**20), round(sum(cpu.values()), 1), _shuffle_mb(event_log) if event_log else None, phases, stdout)


def _shuffle_mb(event_log: Path) -> float:
    """Shuffle bytes written, summed over every task of every application in the event log folder."""
    written = 0
    for log in event_log.iterdir():
        with log.open() as lines:
            for line in lines:
                if '"SparkListenerTaskEnd"' not in line:
                    continue
                metrics = json.loads(line).get("Task Metrics") or {}
                written += (metrics.get("Shuffle Write Metrics") or {}).get("Shuffle Bytes Written", 0)
    return round(written / 2**20, 1)


def parquet_files(root: Path) -> tuple[int, float]:
    """How many Parquet files under `root`, and their mean size in MB."""
    sizes = [p.stat().st_size for p in root.rglob("*.parquet")]
    return len(sizes), round(sum(sizes) / len(sizes) / 2**20, 2) if sizes else 0.0
