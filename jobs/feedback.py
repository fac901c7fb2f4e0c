"""`audience-relay feedback`: what each destination says it holds, next to what the run sent it (pipeline/feedback.py).

Asks the destinations that have not answered yet (or all, or none: the feedback machine's Glue
job only consolidates what its Map asked) and writes the feedback table of the run.
"""
from __future__ import annotations

import argparse
import json
import sys

from audience_relay.pipeline.config import DEFAULT_CONFIG, load_config
from audience_relay.pipeline.feedback import consolidate
from audience_relay.pipeline.feedback_collect import FeedbackError, FeedbackIncomplete, collect, reporting_destinations
from audience_relay.pipeline.paths import RUN_ID


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="the run layout's root")
    parser.add_argument("--run", required=True, help="run id")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="destinations YAML")
    parser.add_argument("--endpoint", action="append", default=[], metavar="D=URL",
                        help="ask destination D at URL instead (an emulator); repeatable")
    parser.add_argument("--ask", choices=["missing", "all", "none"], default="missing",
                        help="which destinations to ask: those without an answer kept (default), all again (after a later "
                             "delivery), none (consolidate only: the feedback machine's Glue job, after its Map asked them)")
    parser.add_argument("--master", help="Spark master (default local[*])")


def run_feedback(args: argparse.Namespace) -> int:
    if not RUN_ID.fullmatch(args.run):
        raise FeedbackError(f"run id {args.run!r} must match {RUN_ID.pattern}")
    config = load_config(args.config)
    if not reporting_destinations(config):
        raise FeedbackError(f"{args.config}: no active HTTP destination has connection.account_id to report on")
    if any("=" not in item for item in args.endpoint):
        raise FeedbackError(f"--endpoint takes DESTINATION=URL, got {args.endpoint}")
    endpoints = dict(item.split("=", 1) for item in args.endpoint)
    found, missing = None, None
    try:
        if args.ask != "none":
            found = collect(config, args.out, args.run, endpoints, refresh=args.ask == "all")
    except FeedbackIncomplete as error:
        missing = str(error)
    from audience_relay.pipeline.session import build_session

    # What did answer is consolidated either way; the others show as not reported.
    table = consolidate(build_session("audience-relay-feedback", args.master), config, args.out, args.run)
    print(json.dumps({"asked": found, "table": table}))
    if missing:
        print(f"audience-relay feedback: {missing}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for spark-submit and Glue (the feedback machine's Consolidate job)."""
    from audience_relay.pipeline.entry import run_job

    return run_job("feedback", __doc__, add_arguments, run_feedback, argv)


if __name__ == "__main__":
    sys.exit(main())
