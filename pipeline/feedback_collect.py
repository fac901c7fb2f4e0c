"""Delivery feedback, first half: ask each destination what it holds (no Spark).

Each HTTP destination is asked for its own audience report, every page of it (Meta: custom
audiences with their matched-people estimate; Google: Customer Match lists with their size and
match rate). Each destination's answer is written as it comes, a partial result
(`runs/<run>/feedback/parts/<destination>.json`), so one failing destination loses nothing of
the others and a retry asks only for the missing ones. The CLI asks them in turn; in AWS the
feedback machine's Distributed Map asks them at once, one Express child (this module in a
Lambda, lambdas/feedback.py) per destination. jobs/feedback.py consolidates the parts.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

from audience_relay.connectors.destinations.connection import HttpConnection
from audience_relay.connectors.destinations.registry import REGISTRY
from audience_relay.connectors.destinations.shape import DestinationConfigError
from audience_relay.pipeline import storage
from audience_relay.pipeline.config import Config, Destination
from audience_relay.pipeline.destinations import build_destination


class FeedbackError(ValueError):
    """The run cannot be asked about: a bad run id, no destination reports audiences, a destination
    lacks what its report API needs."""


class FeedbackIncomplete(RuntimeError):
    """Some destinations did not answer; the others' parts are kept and consolidated."""


def reporting_destinations(config: Config) -> list[Destination]:
    """Active HTTP destinations with an account to report on."""
    return [d for d in config.active_destinations if isinstance(d.connection, HttpConnection) and d.connection.account_id]


def part_path(out: str, run_id: str, destination_id: str) -> str:
    return storage.join(out, "runs", run_id, "feedback", "parts", f"{destination_id}.json")


def ask(destination: Destination, out: str, run_id: str, endpoint: str | None = None) -> int:
    """Read every page of the destination's audience report and write its part; returns the
    run's audiences found there. Raises what the API answered when it does not answer."""
    try:
        report_base, headers = REGISTRY[destination.profile].report_access(destination, endpoint)
    except DestinationConfigError as error:
        raise FeedbackError(str(error)) from None
    connector = build_destination(destination, endpoint)
    ours = {platform_id: audience for audience, platform_id in destination.connection.audience_ids.items()}
    connector.open()
    try:
        reported = connector.audience_reports(destination.connection.account_id, report_base, headers)
    finally:
        connector.close()
    fetched_at = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def our_audience(entry) -> str:
        """By the config's id; else by name (deliver names the audiences it creates as ours)."""
        return ours.get(entry.audience) or (entry.name if entry.name in destination.audiences else entry.audience)

    rows = [{"destination_id": destination.id, "audience_id": our_audience(entry),
             "platform_audience_id": entry.audience, "reported_size": entry.size, "reported_match_rate": entry.match_rate,
             "status": entry.status, "fetched_at": fetched_at}
            for entry in reported if our_audience(entry) in destination.audiences]
    storage.write_text(part_path(out, run_id, destination.id), json.dumps(rows, indent=1) + "\n")
    return len(rows)


def collect(config: Config, out: str, run_id: str, endpoints: dict[str, str] | None = None, refresh: bool = False) -> dict[str, int]:
    """Ask each reporting destination in turn (the CLI; in AWS a Distributed Map asks them at
    once); returns destination -> audiences found. A destination with a part already is not
    asked again unless `refresh`. A destination that fails does not stop the others:
    FeedbackIncomplete names them at the end."""
    written, failed = {}, {}
    for destination in reporting_destinations(config):
        if not refresh and storage.read_text(part_path(out, run_id, destination.id)) is not None:
            continue
        try:
            written[destination.id] = ask(destination, out, run_id, (endpoints or {}).get(destination.id))
        except FeedbackError:
            raise
        except Exception as error:   # noqa: BLE001 - a report answer holds counts and ids of audiences, no identifiers
            failed[destination.id] = f"{type(error).__name__}: {str(error)[:200]}"
    if failed:
        raise FeedbackIncomplete(f"no audience report from {failed}; asked and kept: {written}")
    return written
