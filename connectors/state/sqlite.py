"""The embedded state store: one SQLite file, safe for the threads of one process.

Every write is one transaction; quota consumption is a conditional UPDATE, so two jobs sharing
the file never exceed a quota together.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from audience_relay.connectors.state.store import AlreadyDelivered, BatchRecord, BatchState, DeadLetter, Fence

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    batch_key TEXT PRIMARY KEY, run_id TEXT NOT NULL, destination_id TEXT NOT NULL,
    audience_id TEXT NOT NULL, op TEXT NOT NULL, batch_number INTEGER NOT NULL,
    checksum TEXT NOT NULL, ids INTEGER NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL, error TEXT, updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_run ON ledger (run_id, destination_id);
CREATE TABLE IF NOT EXISTS quota (
    quota_key TEXT NOT NULL, period TEXT NOT NULL, used INTEGER NOT NULL,
    PRIMARY KEY (quota_key, period)
);
CREATE TABLE IF NOT EXISTS audiences (
    destination_id TEXT NOT NULL, audience TEXT NOT NULL, platform_id TEXT NOT NULL,
    PRIMARY KEY (destination_id, audience)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    batch_key TEXT PRIMARY KEY, run_id TEXT NOT NULL, destination_id TEXT NOT NULL,
    error TEXT NOT NULL, attempts INTEGER NOT NULL, failed_at TEXT NOT NULL
);
"""
COLUMNS = "run_id, destination_id, audience_id, op, batch_number, checksum, ids, state, attempts, error, updated_at"


class SqliteStateStore:
    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def _record(row: tuple) -> BatchRecord:
        values = dict(zip(COLUMNS.split(", "), row))
        return BatchRecord(**{**values, "state": BatchState(values["state"])})

    def _values(self, record: BatchRecord) -> tuple:
        return (
            record.batch_key, record.run_id, record.destination_id, record.audience_id, record.op, record.batch_number,
            record.checksum, record.ids, record.state.value, record.attempts, record.error, record.updated_at,
        )

    def register(self, records: list[BatchRecord]) -> int:
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(f"INSERT OR IGNORE INTO ledger (batch_key, {COLUMNS}) VALUES ({', '.join('?' * 12)})",
                                 [self._values(r) for r in records])
            self._db.execute("COMMIT")
            return self._db.total_changes - before

    def get(self, key: str) -> BatchRecord | None:
        row = self._db.execute(f"SELECT {COLUMNS} FROM ledger WHERE batch_key = ?", (key,)).fetchone()
        return self._record(row) if row else None

    def batches(self, run_id: str, destination_id: str | None = None) -> list[BatchRecord]:
        query = f"SELECT {COLUMNS} FROM ledger WHERE run_id = ?" + (" AND destination_id = ?" if destination_id else "")
        params = (run_id, destination_id) if destination_id else (run_id,)
        return [self._record(r) for r in self._db.execute(query + " ORDER BY batch_key", params)]

    def check_fence(self, fence: Fence) -> None:
        raise ValueError("fencing needs the DynamoDB state store, where the lease lives")

    def save(self, record: BatchRecord, fence: Fence | None = None) -> None:
        if fence is not None:
            raise ValueError("fenced ledger writes need the DynamoDB state store, where the lease lives")
        with self._lock:
            cursor = self._db.execute(
                f"INSERT INTO ledger (batch_key, {COLUMNS}) VALUES ({', '.join('?' * 12)}) "
                "ON CONFLICT (batch_key) DO UPDATE SET state = excluded.state, attempts = excluded.attempts, "
                "error = excluded.error, updated_at = excluded.updated_at WHERE ledger.state <> 'delivered'",
                self._values(record),
            )
        if cursor.rowcount == 0:
            raise AlreadyDelivered(record.batch_key)

    def consume_quota(self, quota_key: str, window: str, amount: int, limit: int, fence: Fence | None = None) -> bool:
        if fence is not None:
            raise ValueError("fenced quota writes need the DynamoDB state store, where the lease lives")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR IGNORE INTO quota VALUES (?, ?, 0)", (quota_key, window))
            cursor = self._db.execute(
                "UPDATE quota SET used = used + ? WHERE quota_key = ? AND period = ? AND used + ? <= ?",
                (amount, quota_key, window, amount, limit),
            )
            self._db.execute("COMMIT")
            return cursor.rowcount == 1

    def quota_used(self, quota_key: str, window: str) -> int:
        row = self._db.execute("SELECT used FROM quota WHERE quota_key = ? AND period = ?", (quota_key, window)).fetchone()
        return row[0] if row else 0

    def add_dead_letter(self, letter: DeadLetter) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?)",
                (letter.batch_key, letter.run_id, letter.destination_id, letter.error, letter.attempts, letter.failed_at),
            )

    def dead_letters(self, run_id: str | None = None) -> list[DeadLetter]:
        query = "SELECT batch_key, run_id, destination_id, error, attempts, failed_at FROM dead_letters"
        rows = self._db.execute(query + (" WHERE run_id = ?" if run_id else "") + " ORDER BY batch_key", (run_id,) if run_id else ())
        return [DeadLetter(*row) for row in rows]

    def remove_dead_letter(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM dead_letters WHERE batch_key = ?", (key,))

    def audience_ids(self, destination_id: str) -> dict[str, str]:
        rows = self._db.execute("SELECT audience, platform_id FROM audiences WHERE destination_id = ?", (destination_id,))
        return dict(rows.fetchall())

    def record_audience_id(self, destination_id: str, audience: str, platform_id: str) -> str:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO audiences VALUES (?, ?, ?)", (destination_id, audience, platform_id))
        return self.audience_ids(destination_id)[audience]
