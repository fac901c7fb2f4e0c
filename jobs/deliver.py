"""`deliver`: send a prepared run's batches to their destinations, resumable and idempotent (pipeline/deliver.py).

Runs under spark-submit, Glue and `audience-relay deliver`. Exit codes: 0 SUCCEEDED,
3 QUOTA_DEFERRED (with `resume_at`) or WAITING (an earlier run of the destination is not yet
committed), 4 SUPERSEDED (a newer run is committed; nothing sent), 5 REMOVALS_HELD (removals over
a removal guard wait for `approve-removals`; all else was sent), 6 BLOCKED (prepare left the
destination out while an earlier run's held removals wait for a decision; nothing sent), 1 FAILED
(failed batches are in the dead-letter store).
"""
from __future__ import annotations

import argparse
import json
import sys

from audience_relay.pipeline import storage
from audience_relay.pipeline.config import load_config
from audience_relay.pipeline.deliver import DeliverError, DeliverRequest, run_deliver


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="the output root given to prepare")
    parser.add_argument("--run-id", "--run_id", dest="run_id", required=True)
    parser.add_argument("--config", help="destinations YAML (default: the embedded example config)")
    parser.add_argument("--state", help="state store: a SQLite file (default <out>/state/delivery.db) or dynamodb://TABLE")
    parser.add_argument("--workers", type=int, default=2, help="parallel workers per destination (default 2)")
    parser.add_argument("--endpoint", action="append", default=[], metavar="DESTINATION=URL", help="send a destination to another URL (an emulator)")
    parser.add_argument("--destination", action="append", default=[], help="deliver only these destinations")
    parser.add_argument("--master", help="Spark master when starting Spark locally (default local[*])")
    parser.add_argument("--fence-owner", "--fence_owner", dest="fence_owner", help="owner of the quota lease (set by the state machine)")
    parser.add_argument("--fence-token", "--fence_token", dest="fence_token", type=int, help="fencing token of that lease")
    parser.add_argument("--lease-seconds", "--lease_seconds", dest="lease_seconds", type=float, default=4 * 3600,
                        help="with --fence_owner: the lease is renewed to this many seconds ahead every third of it")
    parser.add_argument("--lease-stop-fraction", "--lease_stop_fraction", dest="lease_stop_fraction", type=float, default=0.25,
                        help="with --fence_owner: workers stop sending once less than this share of the lease is left, "
                             "i.e. once its renewals have failed for a while (default 0.25)")
    parser.add_argument(
        "--deferred-exit-code", "--deferred_exit_code", dest="deferred_exit_code", type=int, default=3,
        help="exit code for QUOTA_DEFERRED and WAITING (default 3; Glue jobs under Step Functions use 0 and read summary.json)",
    )
    parser.add_argument(
        "--superseded-exit-code", "--superseded_exit_code", dest="superseded_exit_code", type=int, default=4,
        help="exit code for SUPERSEDED: a newer run was committed since this one was prepared, nothing was sent "
             "(default 4; under Step Functions 0)",
    )
    parser.add_argument(
        "--held-exit-code", "--held_exit_code", dest="held_exit_code", type=int, default=5,
        help="exit code for REMOVALS_HELD: removals over a removal guard wait for approve-removals, all else was sent "
             "(default 5; under Step Functions 0)",
    )
    parser.add_argument(
        "--blocked-exit-code", "--blocked_exit_code", dest="blocked_exit_code", type=int, default=6,
        help="exit code for BLOCKED: prepare left the destination out while an earlier run's held removals wait for "
             "approve-removals, nothing was sent (default 6; under Step Functions 0)",
    )
    parser.add_argument(
        "--failed-exit-code", "--failed_exit_code", dest="failed_exit_code", type=int, default=1,
        help="exit code for a FAILED summary (default 1; under Step Functions 0: the machine routes on summary.json, "
             "and a crash without a summary still fails the Glue run)",
    )


def request_from_args(args: argparse.Namespace) -> DeliverRequest:
    from audience_relay.pipeline.config import DEFAULT_CONFIG

    endpoints = {}
    for item in args.endpoint:
        name, sep, url = item.partition("=")
        if not sep:
            raise DeliverError(f"--endpoint {item!r}: expected DESTINATION=URL")
        endpoints[name] = url
    if args.workers < 1:
        raise DeliverError(f"--workers must be at least 1, got {args.workers}")
    if not 0 <= args.lease_stop_fraction < 2 / 3:   # renewed every third: at least 2/3 is left while they work
        raise DeliverError(f"--lease-stop-fraction must be at least 0 and under 2/3, got {args.lease_stop_fraction}")
    return DeliverRequest(
        out=args.out, run_id=args.run_id, config=load_config(args.config or DEFAULT_CONFIG),
        state=args.state or storage.join(args.out, "state", "delivery.db"), workers=args.workers,
        endpoints=endpoints, destinations=tuple(args.destination),
        fence_owner=args.fence_owner, fence_token=args.fence_token, lease_seconds=args.lease_seconds,
        lease_stop_fraction=args.lease_stop_fraction,
    )


# Each summary status but SUCCEEDED (0) exits with the code of its option (under Step Functions all 0).
EXIT_CODE_OPTIONS = {"QUOTA_DEFERRED": "deferred_exit_code", "WAITING": "deferred_exit_code", "FAILED": "failed_exit_code",
                     "SUPERSEDED": "superseded_exit_code", "REMOVALS_HELD": "held_exit_code", "BLOCKED": "blocked_exit_code"}


def command(args: argparse.Namespace) -> int:
    """Run deliver from parsed arguments, print the summary, exit by its status."""
    from audience_relay.pipeline.session import build_session

    request = request_from_args(args)
    summary = run_deliver(build_session("audience-relay-deliver", args.master), request)
    print(json.dumps(summary))
    option = EXIT_CODE_OPTIONS.get(summary["status"])
    return getattr(args, option) if option else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for spark-submit and Glue."""
    from audience_relay.pipeline.entry import run_job

    return run_job("deliver", __doc__, add_arguments, command, argv)


if __name__ == "__main__":
    sys.exit(main())
