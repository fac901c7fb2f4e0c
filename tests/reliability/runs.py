"""Prepared runs with many small batches, and the deliver job started as a process of its own.

The deliver job runs as its own session (`start_new_session=True`) so that a crash point or a
test can SIGKILL all of it (driver, JVM, Python workers) the way a lost node dies.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from audience_relay.cli.main import main
from audience_relay.connectors.destination import Batch
from audience_relay.connectors.destinations.meta.client import session_id
from audience_relay.connectors.failpoints import CRASH_AT
from audience_relay.connectors.state.store import BatchRecord

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = "r1"
SEGMENTS = ("seg_1", "seg_2", "seg_3", "seg_4")


def meta_destination(destination_id: str, batch_size: int, rpm: int, quota: dict | None = None, timeout_seconds: float = 30.0) -> dict:
    """A Meta-profile destination taking emails, in two audiences fed by two segments each."""
    destination = {
        "id": destination_id, "kind": "http_api", "profile": "meta_custom_audiences", "id_types": ["email"],
        "max_batch_size": batch_size, "rate_limit": {"requests_per_minute": rpm},
        "credentials": {"env": "META_ACCESS_TOKEN"}, "sync_mode": "mirror",
        "connection": {"base_url": "https://graph.facebook.com/v26.0", "timeout_seconds": timeout_seconds},
        "audiences": {"aud_a": ["seg_1", "seg_2"], "aud_b": ["seg_3", "seg_4"]},
    }
    if quota:
        destination["daily_quota"] = quota
    return destination


@dataclass(frozen=True)
class PreparedRun:
    out: Path
    config: Path
    manifest: dict

    def batches(self, destination_id: str | None = None) -> list[dict]:
        return [b for b in self.manifest["batches"] if destination_id in (None, b["destination_id"])]

    def session_keys(self, destination_id: str | None = None) -> set[str]:
        return {session_key(b) for b in self.batches(destination_id)}

    def copy(self, to: Path) -> PreparedRun:
        """A fresh copy with an empty ledger and no committed snapshot, for one scenario."""
        shutil.copytree(self.out, to / "out")
        return PreparedRun(to / "out", self.config, self.manifest)


def session_key(batch: dict) -> str:
    """The idempotency key the Meta emulator files a manifest batch under."""
    return f"session:{session_id(Batch(record_of(batch), []))}"


def record_of(batch: dict) -> BatchRecord:
    return BatchRecord(RUN_ID, batch["destination_id"], batch["audience_id"], batch["op"], batch["batch_number"], batch["checksum"], batch["ids"])


def prepare_run(root: Path, users: int, destinations: list[dict]) -> PreparedRun:
    """Write `users` members (one email each, spread over four segments) and prepare them."""
    root.mkdir(parents=True, exist_ok=True)
    membership = root / "membership"
    membership.mkdir()
    table = pa.table({
        "user_id": [f"u{i:07d}" for i in range(users)],
        "id_type": ["email"] * users,
        "id_value": [f" User{i}@Example.COM" for i in range(users)],
        "segment_id": [SEGMENTS[i % len(SEGMENTS)] for i in range(users)],
    })
    pq.write_table(table, membership / "part-0.parquet")
    (membership / "_SUCCESS").touch()
    config = root / "destinations.yaml"
    config.write_text(yaml.safe_dump({"version": 1, "destinations": destinations}))
    out = root / "out"
    code = main(["prepare", "--input", str(membership), "--out", str(out), "--config", str(config), "--run-id", RUN_ID])
    assert code == 0, "prepare failed"
    return PreparedRun(out, config, json.loads((out / "runs" / RUN_ID / "manifest.json").read_text()))


@dataclass
class DeliverProcess:
    process: subprocess.Popen
    stdout: Path
    stderr: Path

    def wait(self, timeout: float = 300) -> tuple[int, dict | None]:
        """Exit code and the printed summary (None when the job died before printing it).

        A job still running at the timeout is killed, so a stuck scenario fails instead of hanging."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.resume()
            self.kill()
            raise AssertionError(f"deliver still running after {timeout} s: {self.stderr_tail()}") from None
        lines = self.stdout.read_text().strip().splitlines()
        summary = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
        return code, summary

    def stderr_tail(self, characters: int = 3000) -> str:
        return self.stderr.read_text()[-characters:]

    def kill(self) -> None:
        """SIGKILL every process of the job's session."""
        from audience_relay.connectors.failpoints import kill_session

        kill_session(self.process.pid)

    def pause(self) -> None:
        _signal_session(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        _signal_session(self.process.pid, signal.SIGCONT)


def _signal_session(session: int, signum: int) -> None:
    from audience_relay.connectors.failpoints import session_members

    for pid in session_members(session):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def start_deliver(
    run: PreparedRun, endpoints: dict[str, str], logs: Path, *, crash_at: str | None = None,
    extra: tuple[str, ...] = (), workers: int = 2,
) -> DeliverProcess:
    """`python -m audience_relay.jobs.deliver` (what spark-submit and Glue run) as a session leader."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "PYTHONPATH": str(ROOT), "META_ACCESS_TOKEN": "test-meta-token"}
    env.pop(CRASH_AT, None)
    if crash_at:
        env[CRASH_AT] = crash_at
    command = [sys.executable, "-m", "audience_relay.jobs.deliver", "--out", str(run.out), "--run-id", RUN_ID, "--config", str(run.config),
               "--workers", str(workers), "--master", "local[2]", *extra]
    for destination_id, url in endpoints.items():
        command += ["--endpoint", f"{destination_id}={url}"]
    logs.mkdir(parents=True, exist_ok=True)
    stamp = time.monotonic_ns()
    stdout, stderr = logs / f"deliver-{stamp}.out", logs / f"deliver-{stamp}.err"
    with stdout.open("w") as out, stderr.open("w") as err:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True)
    return DeliverProcess(process, stdout, stderr)


def unrecorded_keys(run: PreparedRun, destination_id: str, accepted, delivered_batch_keys: set[str]) -> set[str]:
    """Idempotency keys the destination accepted whose batches the ledger does not hold as delivered:
    the requests in flight when a job died, which a resume sends again."""
    return {
        session_key(batch) for batch in run.batches(destination_id)
        if record_of(batch).batch_key not in delivered_batch_keys and session_key(batch) in accepted
    }


def ledger_states(run: PreparedRun) -> dict[str, str]:
    """batch key -> state, read straight from the SQLite ledger (empty before the first deliver)."""
    path = run.out / "state" / "delivery.db"
    if not path.exists():
        return {}
    with sqlite3.connect(path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "ledger" not in tables:
            return {}
        return dict(connection.execute("SELECT batch_key, state FROM ledger"))
