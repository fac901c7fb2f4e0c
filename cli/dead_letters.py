"""`audience-relay dead-letters`: list permanently failed batches, or queue them for another try.

Replaying moves a failed batch back to `pending` and removes its dead letter; the next
`deliver` of the run sends it again (under the same batch key, so a destination that did
receive it can de-duplicate).
"""
from __future__ import annotations

import argparse
import json

from audience_relay.connectors.state.store import BatchState
from audience_relay.pipeline import storage
from audience_relay.pipeline.deliver import DeliverError, open_store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="the output root given to prepare and deliver")
    parser.add_argument("--state", help="state store: a SQLite file (default <out>/state/delivery.db) or dynamodb://TABLE")
    parser.add_argument("--run-id", "--run_id", dest="run_id", help="only this run")
    parser.add_argument("--replay", action="store_true", help="move the listed batches back to pending for the next deliver")


def run_dead_letters(args: argparse.Namespace) -> int:
    state = args.state or storage.join(args.out, "state", "delivery.db")
    if not state.startswith("dynamodb://") and not storage.exists(state):
        raise DeliverError(f"{state}: no delivery state here; run deliver first or pass --state")
    store = open_store(state)
    letters = store.dead_letters(args.run_id)
    for letter in letters:
        if args.replay:
            record = store.get(letter.batch_key)
            if record and record.state is BatchState.FAILED:
                store.save(record.moved_to(BatchState.PENDING, record.attempts, None))
            store.remove_dead_letter(letter.batch_key)
        print(json.dumps({**letter.__dict__, "replayed": args.replay}))
    return 0
