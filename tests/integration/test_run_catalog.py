"""The run catalog on a real PostgreSQL server: versioned migrations, a window's runs and files in
one connection and one INSERT per table, idempotent re-records, and the CLI."""
import json
import uuid

import psycopg
import pytest

from audience_relay.cli.main import main
from audience_relay.connectors.catalog.postgres import AccountingRecord, CatalogError, RunCatalog, RunRecord, migrate
from audience_relay.connectors.catalog.source import CatalogSource
from audience_relay.orchestration.ingest_window import WindowSettings
from tests.integration.ingest_stage import Stage, members

pytestmark = pytest.mark.integration


@pytest.fixture
def catalog_dsn(postgres_server):
    dsn = postgres_server.create_database(f"catalog_{uuid.uuid4().hex[:8]}")
    assert migrate(dsn) == ["0001.runs-files-accounting"]
    return dsn


def test_migrations_apply_once_in_order_and_the_schema_keeps_its_rules(postgres_server, capsys):
    dsn = postgres_server.create_database("fresh")
    assert main(["catalog", "--dsn", dsn, "migrate"]) == 0
    assert json.loads(capsys.readouterr().out) == {"applied": ["0001.runs-files-accounting"]}
    assert main(["catalog", "--dsn", dsn, "migrate"]) == 0
    assert json.loads(capsys.readouterr().out) == {"applied": []}   # up to date: nothing again
    with psycopg.connect(dsn) as connection:
        tables = {row[0] for row in connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"runs", "ingested_files", "run_accounting"} <= tables
        with pytest.raises(psycopg.errors.CheckViolation):   # an accepted file names its run
            connection.execute("INSERT INTO ingested_files (file_uri, etag, size_bytes, outcome, window_id) "
                               "VALUES ('s3://b/k', 'e', 1, 'accepted', 'w')")


def test_a_window_records_its_run_and_every_file_in_one_connection_and_one_insert_per_table(moto_server, catalog_dsn, monkeypatch):
    stage = Stage()
    stage.settings = WindowSettings(**{**stage.settings.__dict__, "catalog": CatalogSource(dsn=catalog_dsn)})
    good = [stage.land(f"incoming/part-{n}.csv.gz", members(10 * n, 3)) for n in range(2)]
    bad = stage.land("incoming/headless.csv.gz", members(0, 3)[:30])
    connects, statements = [], []
    real_connect, real_execute = psycopg.connect, psycopg.Cursor.execute
    monkeypatch.setattr(psycopg, "connect", lambda *a, **k: connects.append(1) or real_connect(*a, **k))
    monkeypatch.setattr(psycopg.Cursor, "execute", lambda self, query, *a, **k: statements.append(query) or real_execute(self, query, *a, **k))

    assert stage.window().retried == 0

    assert len(connects) == 1 and [q.split()[2] for q in statements] == ["runs", "ingested_files"]
    [run] = stage.executions()
    found = RunCatalog(catalog_dsn).run(run["run_id"])
    assert (found["trigger"], found["input_uri"]) == ("window", run["input"])
    assert [(f["file_uri"], f["etag"], f["outcome"]) for f in found["files"]] == [(f.uri, f.etag, "accepted") for f in good]
    [quarantined] = RunCatalog(catalog_dsn).quarantined()
    assert (quarantined["file_uri"], quarantined["run_id"]) == (bad.uri, None) and "truncated" in quarantined["reason"]


def test_a_failed_catalog_write_is_retried_and_recorded_once_the_catalog_is_back(moto_server, catalog_dsn, postgres_server):
    stage = Stage(visibility_seconds=1)
    landed = stage.land("incoming/a.csv.gz", members(0, 3))
    unreachable = catalog_dsn.replace(f":{postgres_server.port}/", ":1/")
    working = stage.settings
    stage.settings = WindowSettings(**{**working.__dict__, "catalog": CatalogSource(dsn=unreachable)})
    assert stage.window().retried == 1   # the run started; only the record is retried
    [run] = stage.executions()
    stage.settings = WindowSettings(**{**working.__dict__, "catalog": CatalogSource(dsn=catalog_dsn)})
    import time
    time.sleep(1.5)   # the message's visibility timeout
    assert stage.window().retried == 0
    assert len(stage.executions()) == 1   # the retry found the file done: nothing started again
    assert [f["file_uri"] for f in RunCatalog(catalog_dsn).run(run["run_id"])["files"]] == [landed.uri]


def test_accounting_is_recorded_per_destination_and_a_later_record_replaces_it(catalog_dsn):
    catalog = RunCatalog(catalog_dsn)
    run = RunRecord("daily-202612010600", "schedule", "s3://lake/segments/dt=2026-12-01/")
    rows = {"delivered": 70, "pending": 20, "unchanged": 5, "consent_filtered": 3, "unmapped": 1, "rejected": 1}
    catalog.record_accounting(run, [AccountingRecord("meta_ads", "QUOTA_DEFERRED", 100, rows)])
    catalog.record_accounting(run, [AccountingRecord("meta_ads", "SUCCEEDED", 100, {**rows, "delivered": 90, "pending": 0})])
    [line] = catalog.run(run.run_id)["accounting"]
    assert (line["status"], line["delivered"], line["pending"], line["reconciles"]) == ("SUCCEEDED", 90, 0, True)
    with pytest.raises(CatalogError, match=r"run catalog 127\.0\.0\.1:1/catalog_\w+: cannot connect") as refused:
        RunCatalog(catalog_dsn.replace(catalog_dsn.split("@")[1].split("/")[0], "127.0.0.1:1")).run("x")
    assert catalog_dsn.split(":")[2].split("@")[0] not in str(refused.value)   # never the password


def test_the_command_needs_a_catalog_and_names_a_missing_run(catalog_dsn, monkeypatch, capsys):
    monkeypatch.delenv("CATALOG_DSN", raising=False)
    assert main(["catalog", "migrate"]) == 2
    assert "pass --dsn or set CATALOG_DSN" in capsys.readouterr().err
    monkeypatch.setenv("CATALOG_DSN", catalog_dsn)
    assert main(["catalog", "show", "--run", "nope"]) == 2
    assert "the catalog has no run 'nope'" in capsys.readouterr().err
    # A malformed DSN is bad input, and is never echoed (it holds the password).
    assert main(["catalog", "--dsn", "relay:s3cret@db.example.com/catalog", "migrate"]) == 2
    assert "not a PostgreSQL connection string" in (err := capsys.readouterr().err) and "s3cret" not in err
    # An unreachable catalog is said plainly (exit 1), naming where, not how to log in.
    unreachable = catalog_dsn.rsplit(":", 1)[0] + ":1/" + catalog_dsn.rsplit("/", 1)[1]
    assert main(["catalog", "--dsn", unreachable, "show", "--run", "x"]) == 1
    err = capsys.readouterr().err
    assert "127.0.0.1:1/" in err and "cannot connect" in err and catalog_dsn.split(":")[2].split("@")[0] not in err
