"""The run catalog in PostgreSQL (Aurora PostgreSQL in AWS): runs, their files, their accounting.

Schema changes are versioned SQL files in `migrations/`, applied in order by `migrate`
(yoyo-migrations: it records what is applied, and takes a lock so two deploys cannot apply the
same change twice). Every write is idempotent, because its callers retry: a window re-recorded
after a failed write, a run's accounting recorded again after another delivery. A batch of
files is written with one connection, one transaction and one INSERT per table (the rows go as
arrays through `unnest`), whatever the number of files.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
from psycopg.rows import dict_row

MIGRATIONS = Path(__file__).with_name("migrations")
ROW_KINDS = ("delivered", "pending", "unchanged", "consent_filtered", "unmapped", "rejected")


class CatalogError(RuntimeError):
    """The catalog cannot be reached or refused a write; the message names the database, never a password."""


class CatalogDsnError(CatalogError, ValueError):
    """The DSN is not a PostgreSQL connection string (it is not quoted: it holds the password)."""


# An Aurora Serverless v2 cluster paused at 0 capacity units resumes on the first connection,
# in about 15 s (longer after a day paused): the connection waits for it.
CONNECT_TIMEOUT_SECONDS = "30"
URL_KEYS = ("user", "password", "host", "port", "dbname")


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    trigger: str          # window | marker | schedule | manual
    input_uri: str
    window_id: str | None = None


@dataclass(frozen=True)
class FileRecord:
    file_uri: str
    etag: str
    size_bytes: int
    outcome: str          # accepted | quarantined
    run_id: str | None    # the run it went into (accepted)
    reason: str | None    # why it was quarantined
    window_id: str


@dataclass(frozen=True)
class AccountingRecord:
    destination_id: str
    status: str
    input_rows: int
    rows: dict[str, int]  # ROW_KINDS -> rows


def _columns(record_type) -> list[str]:
    return [f.name for f in fields(record_type)]


def _bulk_insert(table: str, record_type, types: list[str], conflict: str) -> str:
    """One INSERT for any number of rows: each column arrives as one array."""
    columns = _columns(record_type)
    arrays = ", ".join(f"%s::{kind}[]" for kind in types)
    return f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({arrays}) {conflict}"


RUNS_INSERT = _bulk_insert("runs", RunRecord, ["text"] * 4,
                           "ON CONFLICT (run_id) DO UPDATE SET window_id = COALESCE(runs.window_id, excluded.window_id)")
FILES_INSERT = _bulk_insert("ingested_files", FileRecord, ["text", "text", "bigint", "text", "text", "text", "text"],
                            "ON CONFLICT (file_uri, etag) DO NOTHING")
ACCOUNTING_UPSERT = (
    "INSERT INTO run_accounting (run_id, destination_id, status, input_rows, " + ", ".join(ROW_KINDS) + ") "
    "SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::bigint[], " + ", ".join(["%s::bigint[]"] * len(ROW_KINDS)) + ") "
    "ON CONFLICT (run_id, destination_id) DO UPDATE SET status = excluded.status, input_rows = excluded.input_rows, "
    + ", ".join(f"{kind} = excluded.{kind}" for kind in ROW_KINDS) + ", recorded_at = now()"
)


def _transposed(records: list, record_type) -> list[list]:
    return [[getattr(record, name) for record in records] for name in _columns(record_type)]


def _conninfo(dsn: str) -> dict:
    """The DSN's parts (a URL or `key=value` pairs), with a connect timeout unless it sets one."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        raise CatalogDsnError("the catalog DSN is not a PostgreSQL connection string (postgresql://user:password@host:port/db); "
                              "not shown, since it holds the password") from None
    return {"connect_timeout": CONNECT_TIMEOUT_SECONDS, **info}


def _where(dsn: str) -> str:
    """host:port/dbname of a DSN, for errors (never the password)."""
    info = _conninfo(dsn)
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def _yoyo_url(dsn: str) -> str:
    """yoyo names a database by URL: user, password, host, port and database in it, every other
    option (sslmode, sslrootcert, connect_timeout) as a query argument yoyo hands to psycopg."""
    info = _conninfo(dsn)
    user, password = quote(info.get("user", ""), safe=""), quote(info.get("password", ""), safe="")
    credentials = f"{user}:{password}@" if user else ""
    host = info.get("host", "localhost")
    host = f"[{host}]" if ":" in host else quote(host, safe="")
    options = urlencode({key: value for key, value in info.items() if key not in URL_KEYS})
    return f"postgresql+psycopg://{credentials}{host}:{info.get('port', 5432)}/{info.get('dbname', '')}?{options}"


def migrate(dsn: str) -> list[str]:
    """Apply the migrations not yet applied, in order; returns their ids (none when up to date)."""
    from yoyo import get_backend, read_migrations

    try:
        backend = get_backend(_yoyo_url(dsn))
    except psycopg.OperationalError as error:
        raise CatalogError(f"run catalog {_where(dsn)}: cannot connect ({str(error).splitlines()[0][:300]})") from None
    migrations = read_migrations(str(MIGRATIONS))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return [migration.id for migration in pending]


class RunCatalog:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    def _connect(self) -> psycopg.Connection:
        info = _conninfo(self._dsn)
        try:
            return psycopg.connect(**info)
        except psycopg.OperationalError as error:
            raise CatalogError(f"run catalog {_where(self._dsn)}: cannot connect ({str(error).splitlines()[0][:300]})") from None

    def _write(self, statements: list[tuple[str, list]]) -> None:
        """The statements in one connection and one transaction; a connection lost on the way is
        a CatalogError (retried by the callers), like one never made."""
        with self._connect() as connection:
            try:
                with connection.cursor() as cursor:
                    for statement, parameters in statements:
                        cursor.execute(statement, parameters)
            except psycopg.OperationalError as error:
                raise CatalogError(f"run catalog {_where(self._dsn)}: connection lost ({str(error).splitlines()[0][:300]})") from None

    def record_window(self, runs: list[RunRecord], files: list[FileRecord]) -> None:
        """A window's runs and files: one connection, one transaction, one INSERT per table."""
        self._write([*([(RUNS_INSERT, _transposed(runs, RunRecord))] if runs else []),
                     *([(FILES_INSERT, _transposed(files, FileRecord))] if files else [])])

    def record_accounting(self, run: RunRecord, lines: list[AccountingRecord]) -> None:
        """A run's accounting per destination, replacing what an earlier record of it said."""
        columns = [[line.destination_id for line in lines], [line.status for line in lines], [line.input_rows for line in lines],
                   *[[line.rows.get(kind, 0) for line in lines] for kind in ROW_KINDS]]
        self._write([(RUNS_INSERT, _transposed([run], RunRecord)), (ACCOUNTING_UPSERT, [run.run_id, *columns])])

    def run(self, run_id: str) -> dict | None:
        """The run, its files and its accounting, or None when the catalog has no such run."""
        with self._connect() as connection, connection.cursor(row_factory=dict_row) as cursor:
            found = cursor.execute("SELECT * FROM runs WHERE run_id = %s", [run_id]).fetchone()
            if found is None:
                return None
            files = cursor.execute("SELECT * FROM ingested_files WHERE run_id = %s ORDER BY file_uri", [run_id]).fetchall()
            accounting = cursor.execute("SELECT * FROM run_accounting WHERE run_id = %s ORDER BY destination_id", [run_id]).fetchall()
        return {**found, "files": files, "accounting": accounting}

    def quarantined(self) -> list[dict]:
        """Every file quarantined, newest first."""
        with self._connect() as connection, connection.cursor(row_factory=dict_row) as cursor:
            return cursor.execute("SELECT * FROM ingested_files WHERE outcome = 'quarantined' ORDER BY recorded_at DESC, file_uri").fetchall()
