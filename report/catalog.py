"""A run's accounting per destination, recorded in the run catalog (the `catalog record` command, the catalog Lambda).

The numbers are the ones `report` shows, read from the run layout; the run's trigger is told by
its id's prefix.
"""
from __future__ import annotations

from audience_relay.pipeline.errors import UsageError
from audience_relay.report.run_report import load_report

# Run ids as the ways of starting a run name them (orchestration/ingest*.py, the scheduler).
TRIGGERS = (("w-", "window"), ("s3-", "marker"), ("daily-", "schedule"))


class CatalogUsageError(UsageError):
    """No catalog was named, or it has no such run."""


def trigger_of(run_id: str) -> str:
    return next((trigger for prefix, trigger in TRIGGERS if run_id.startswith(prefix)), "manual")


def record_run(dsn: str, out: str, run_id: str) -> dict:
    """A run and its accounting per destination, from the numbers `report` shows (CLI, the catalog Lambda)."""
    from audience_relay.connectors.catalog.postgres import AccountingRecord, RunCatalog, RunRecord

    report = load_report(out, run_id)
    if report.input_uri is None:
        raise CatalogUsageError(f"run {run_id!r}: its manifest names no input (inputs.membership), written by another version?")
    run = RunRecord(run_id, trigger_of(run_id), report.input_uri)
    RunCatalog(dsn).record_accounting(run, [AccountingRecord(line.destination, line.status, line.input_rows, line.rows)
                                            for line in report.destinations])
    return {"recorded": run_id, "destinations": len(report.destinations)}
