"""`audience-relay catalog`: the run catalog in PostgreSQL (Aurora PostgreSQL in AWS).

`migrate` applies the versioned schema files (connectors/catalog/migrations/); `record` writes
a run's accounting per destination (the numbers `report` shows) and the run itself; `show`
prints what the catalog holds for a run: the run, its input files and its accounting. The
ingest windows record their runs and files themselves (orchestration/ingest_window.py).
The DSN comes from `--dsn` or the environment's CATALOG_DSN (a password on a command line is
visible to every process on the machine).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from audience_relay.report.catalog import CatalogUsageError, record_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", default=os.environ.get("CATALOG_DSN"),
                        help="postgresql://user:password@host:port/db (default: the CATALOG_DSN environment variable)")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("migrate", help="apply the schema changes not yet applied, in order")
    record = actions.add_parser("record", help="record a run and its accounting per destination (again: replaces it)")
    record.add_argument("--out", required=True, help="the run layout's root (local or s3://)")
    record.add_argument("--run", required=True, help="run id")
    show = actions.add_parser("show", help="print the catalog's run, its files and its accounting as JSON")
    show.add_argument("--run", required=True, help="run id")


def run_catalog(args: argparse.Namespace) -> int:
    # psycopg is the `catalog` extra: the jobs' wheel on Glue and EMR runs without it.
    from audience_relay.connectors.catalog.postgres import CatalogDsnError, CatalogError

    if not args.dsn:
        raise CatalogUsageError("no catalog: pass --dsn or set CATALOG_DSN")
    try:
        return _act(args)
    except CatalogDsnError as error:
        raise CatalogUsageError(str(error)) from None
    except CatalogError as error:   # unreachable or refused: said plainly, exit 1
        print(f"audience-relay: {error}", file=sys.stderr)
        return 1


def _act(args: argparse.Namespace) -> int:
    from audience_relay.connectors.catalog.postgres import RunCatalog, migrate

    if args.action == "migrate":
        applied = migrate(args.dsn)
        print(json.dumps({"applied": applied}))
        return 0
    if args.action == "record":
        print(json.dumps(record_run(args.dsn, args.out, args.run)))
        return 0
    found = RunCatalog(args.dsn).run(args.run)
    if found is None:
        raise CatalogUsageError(f"the catalog has no run {args.run!r}")
    print(json.dumps(found, indent=2, default=str))
    return 0
