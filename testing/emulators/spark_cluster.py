"""A Spark standalone cluster on loopback: a master and workers, each its own JVM, from the
pip-installed PySpark, so a job runs with executors in other processes than its driver (as on
EMR and Glue), not in the driver's JVM as local[N] runs them."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psutil
import pyspark

from audience_relay.testing.emulators.ports import free_port

SPARK_HOME = Path(pyspark.__file__).resolve().parent
EXECUTOR_CLASS = "org.apache.spark.executor.CoarseGrainedExecutorBackend"
STARTUP_SECONDS = 60
MACHINE_ENVIRONMENT = ("PATH", "HOME", "JAVA_HOME", "LANG", "LC_ALL", "TMPDIR")


def _master_state(ui_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as response:
        return json.load(response)


def _stop(process: subprocess.Popen) -> None:
    """Stop a daemon and what it started (a worker's executors): its whole process group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def standalone_cluster(work: Path, workers: int = 2, cores: int = 1, worker_memory: str = "4g") -> Iterator[str]:
    """A master and `workers` workers of `cores` cores on 127.0.0.1; yields the master URL.

    Executors run this interpreter as their Python (what an EMR bootstrap action or Glue's
    `--additional-python-modules` install on every node). Daemon logs go to `work`.
    """
    work.mkdir(parents=True, exist_ok=True)
    # The daemons (and the executors they start) get none of this process's credentials or endpoints:
    # as on EMR, what a job's executors need is passed with the job (`spark.executorEnv.*`).
    environment = {name: os.environ[name] for name in MACHINE_ENVIRONMENT if name in os.environ}
    environment |= {"SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    port, ui_port = free_port(), free_port()
    master_url = f"spark://127.0.0.1:{port}"
    daemons: list[subprocess.Popen] = []

    def start(name: str, *arguments: str) -> None:
        with (work / f"{name}.log").open("w") as log:
            daemons.append(subprocess.Popen([spark_class, *arguments], stdout=log, stderr=subprocess.STDOUT, env=environment,
                                            start_new_session=True))

    def wait_for(ready, what: str) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if any(d.poll() is not None for d in daemons):
                raise RuntimeError(f"standalone cluster: a daemon exited before {what}; see {work}/*.log")
            try:
                if ready(_master_state(ui_port)):
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"standalone cluster: no {what} after {STARTUP_SECONDS} s; see {work}/*.log")

    try:
        start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui_port))
        wait_for(lambda state: state.get("status") == "ALIVE", "a master")
        for number in range(workers):
            start(f"worker{number}", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", str(cores),
                  "--memory", worker_memory, "--work-dir", str(work / f"worker{number}"), "--webui-port", str(free_port()), master_url)
        wait_for(lambda state: state.get("aliveworkers") == workers, f"{workers} workers")
        yield master_url
    finally:
        for daemon in reversed(daemons):
            _stop(daemon)


def running_executors() -> dict[str, psutil.Process]:
    """Each running executor's JVM (its Python workers are its children), by `app-id/executor-id`."""
    found = {}
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if EXECUTOR_CLASS in command and "--app-id" in command and "--executor-id" in command:
            found[f"{command[command.index('--app-id') + 1]}/{command[command.index('--executor-id') + 1]}"] = process
    return found


def submit_command(master_url: str, executor_memory: str = "1g", driver_memory: str = "1g", executor_env: dict[str, str] | None = None) -> list[str]:
    """spark-submit in client mode with one-core executors and `executor_env` in the executors'
    environment, the driver on loopback like the daemons (the job script and its arguments follow)."""
    environment = [f"--conf=spark.executorEnv.{name}={value}" for name, value in {"PYSPARK_PYTHON": sys.executable, **(executor_env or {})}.items()]
    return [str(SPARK_HOME / "bin" / "spark-submit"), "--master", master_url, "--deploy-mode", "client",
            "--driver-memory", driver_memory, "--executor-memory", executor_memory, "--executor-cores", "1",
            "--conf", "spark.ui.enabled=false", "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1",
            *environment]
