"""Held removals: the audiences whose removals a run's guard held, and what someone decided.

`prepare` holds an audience's mirror removals when they exceed its removal guard (manifest:
`destinations.<id>.removals_held`). `approve-removals` records, per audience, `approved` (deliver
sends them) or `rejected` (never sent: the destination keeps those members, and the run's
snapshot, read as a baseline, lists them again). A run with an undecided audience is not
committed for that destination, and no later run of the destination is prepared on it.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

from audience_relay.pipeline import storage

APPROVED, REJECTED = "approved", "rejected"


class RemovalsError(ValueError):
    """A decision that cannot be recorded as asked; the message names the run and audience."""


def decisions_uri(out: str, run_id: str, destination_id: str) -> str:
    return storage.join(out, "runs", run_id, "delivery", destination_id, "removals.json")


def held(manifest: dict, destination_id: str) -> dict[str, dict]:
    """The guard's numbers per held audience of the destination (empty when nothing was held)."""
    return manifest["destinations"].get(destination_id, {}).get("removals_held", {})


def decisions(out: str, run_id: str, destination_id: str) -> dict[str, str]:
    """Audience -> `approved` or `rejected`, as recorded so far."""
    text = storage.read_text(decisions_uri(out, run_id, destination_id))
    return {audience: entry["decision"] for audience, entry in json.loads(text)["audiences"].items()} if text else {}


def undecided(out: str, run_id: str, destination_id: str) -> list[str]:
    """Held audiences of a prepared run that nobody has approved or rejected yet."""
    text = storage.read_text(storage.join(out, "runs", run_id, "manifest.json"))
    if text is None:
        return []
    waiting = held(json.loads(text), destination_id)
    return sorted(set(waiting) - set(decisions(out, run_id, destination_id))) if waiting else []


def decide(out: str, run_id: str, destination_id: str, decision: str, by: str, audiences: list[str] | None = None) -> dict[str, dict]:
    """Record `decision` for the run's held audiences (all, or those named); returns every decision.

    A decision already taken stays: the same one again is a no-op, the other one is refused,
    because approved removals may already have been sent.
    """
    if decision not in (APPROVED, REJECTED):
        raise RemovalsError(f"decision {decision!r} is not {APPROVED!r} or {REJECTED!r}")
    text = storage.read_text(storage.join(out, "runs", run_id, "manifest.json"))
    if text is None:
        raise RemovalsError(f"run {run_id} has no manifest under {out}: nothing to decide")
    waiting = held(json.loads(text), destination_id)
    if not waiting:
        raise RemovalsError(f"run {run_id} holds no removals for destination {destination_id!r}")
    chosen = audiences or sorted(waiting)
    unknown = sorted(set(chosen) - set(waiting))
    if unknown:
        raise RemovalsError(f"run {run_id}, destination {destination_id!r}: audiences {unknown} have no held removals "
                            f"(held: {sorted(waiting)})")
    uri = decisions_uri(out, run_id, destination_id)
    text, version = storage.read_versioned(uri)
    recorded = json.loads(text)["audiences"] if text else {}
    for audience in chosen:
        earlier = recorded.get(audience, {}).get("decision")
        if earlier not in (None, decision):
            raise RemovalsError(f"run {run_id}, destination {destination_id!r}, audience {audience!r}: removals already {earlier}")
        if earlier is None:
            recorded[audience] = {"decision": decision, "by": by, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                  **waiting[audience]}
    try:
        storage.write_text_if(uri, json.dumps({"run_id": run_id, "destination_id": destination_id, "audiences": recorded}, indent=2) + "\n",
                              version)
    except storage.Conflict:
        raise RemovalsError(f"{uri} changed while this decision was recorded; look at it and decide again") from None
    return recorded


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="the output root given to prepare")
    parser.add_argument("--run", required=True, help="the run whose removals were held")
    parser.add_argument("--destination", required=True)
    parser.add_argument("--audience", action="append", default=[], help="only this audience (repeatable; default: every held one)")
    parser.add_argument("--reject", action="store_true",
                        help="never send them: the destination keeps those members and the next runs know it")
    parser.add_argument("--by", default=None, help="who decides (recorded with the decision; default: the OS user)")


def run_approve_removals(args) -> int:
    """`audience-relay approve-removals`: record the decision, then say what delivers it."""
    import getpass
    import sys

    from audience_relay.pipeline.logs import log_event

    decision = REJECTED if args.reject else APPROVED
    recorded = decide(args.out, args.run, args.destination, decision, args.by or getpass.getuser(), args.audience or None)
    log_event("removals.decided", run_id=args.run, destination=args.destination, decision=decision,
              audiences=sorted(a for a, entry in recorded.items() if entry["decision"] == decision))
    print(json.dumps({"run_id": args.run, "destination": args.destination, "audiences": recorded}))
    print(f"audience-relay: now deliver run {args.run} for {args.destination} (the state machine, or `audience-relay deliver "
          f"--run-id {args.run} --destination {args.destination}`) to {'send them' if decision == APPROVED else 'commit it'}",
          file=sys.stderr)
    return 0
