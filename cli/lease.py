"""`audience-relay lease`: show a quota lease, or force-release one whose holder is stuck.

The state machines take and release leases themselves; this is the runbook's tool for an
execution that died without releasing (the lease would expire on its own) or a holder that
must be stopped now. Releasing keeps the fencing token, so a holder still running is fenced
out at its next request.
"""
from __future__ import annotations

import argparse
import json

from audience_relay.connectors.state.lease import LeaseLock, LeaseLost
from audience_relay.pipeline.errors import UsageError
from audience_relay.pipeline.logs import log_event


class LeaseCommandError(UsageError):
    """The lease asked for does not exist, or is not held by the owner named."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", required=True, help="dynamodb://TABLE holding the leases (the deliver state table)")
    parser.add_argument("--key", required=True, help="lease name: the destination's daily_quota.key, or its id when it has none")
    parser.add_argument("--release", action="store_true", help="free the lease whoever holds it")
    parser.add_argument("--owner", help="with --release: only if this owner (an execution ARN) still holds it")


def run_lease(args: argparse.Namespace) -> int:
    if not args.state.startswith("dynamodb://"):
        raise LeaseCommandError(f"--state {args.state}: leases live in DynamoDB; pass dynamodb://TABLE")
    table = args.state.removeprefix("dynamodb://")
    lock = LeaseLock(table)
    if args.release:
        try:
            lease = lock.force_release(args.key, args.owner)
        except LeaseLost as error:
            raise LeaseCommandError(f"{table}: {error}") from None
        log_event("lease.force_released", level="WARNING", table=table, key=args.key, expected_owner=args.owner,
                  fencing_token=lease["fencing_token"])
    else:
        lease = lock.describe(args.key)
        if lease is None:
            raise LeaseCommandError(f"{table}: no lease {args.key!r} (never taken)")
    print(json.dumps(lease))
    return 0
