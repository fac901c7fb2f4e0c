"""The feedback machine's Lambda: which destinations report, and asking one of them.

The feedback machine (orchestration.machines.feedback.feedback_machine) invokes it twice over: once
with `{"action": "list", "run_id"}` for the destinations to ask, then from each Express child of
its Distributed Map with `{"action": "ask", "run_id", "destination"}`, which reads every page
of that destination's audience report and writes its part to the work bucket. An error leaves
the function as its type (the child's Catch keeps it as that destination's answer). Configured
by CONFIG_URI (the jobs' config file) and WORK_BUCKET.
"""
from __future__ import annotations

import json
import logging
import os

from audience_relay.pipeline.config import load_config
from audience_relay.pipeline.feedback_collect import FeedbackError, ask, reporting_destinations
from audience_relay.pipeline.paths import RUN_ID

LOG = logging.getLogger("audience_relay.feedback")
LOG.setLevel(logging.INFO)


def handle(event: dict, config_uri: str, out: str) -> dict:
    run_id = event.get("run_id")
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise FeedbackError(f"run_id: {run_id!r} must match {RUN_ID.pattern}")
    destinations = {d.id: d for d in reporting_destinations(load_config(config_uri))}
    if event.get("action") == "list":
        return {"run_id": run_id, "destinations": sorted(destinations)}
    if event.get("action") != "ask":
        raise FeedbackError(f"action: {event.get('action')!r} is neither 'list' nor 'ask'")
    destination = destinations.get(event.get("destination"))
    if destination is None:
        raise FeedbackError(f"destination: {event.get('destination')!r} is not an active HTTP destination with an account "
                            f"in {config_uri} (reporting: {sorted(destinations)})")
    audiences = ask(destination, out, run_id)
    LOG.info(json.dumps({"event": "feedback.asked", "run_id": run_id, "destination": destination.id, "audiences": audiences}))
    return {"destination": destination.id, "audiences": audiences}


def handler(event: dict, context: object) -> dict:
    return handle(event, os.environ["CONFIG_URI"], f"s3://{os.environ['WORK_BUCKET']}")
