"""The delivery state store: batch ledger, shared quota counters and dead letters.

One interface, two implementations: a SQLite file (the embedded default) and DynamoDB (AWS).
The ledger is what makes delivery idempotent: a batch is keyed by its run, destination,
audience, op, number and content checksum, and once `delivered` it never changes state again,
so a re-run or a resume skips it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from enum import Enum
from typing import Protocol


class BatchState(str, Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEFERRED = "deferred"  # quota exhausted before it was sent; sent after the reset
    FAILED = "failed"  # permanently refused or out of retries; in the dead-letter store


class AlreadyDelivered(Exception):
    """A delivered batch cannot change state: the ledger refused the write."""


class FenceRejected(Exception):
    """The writer's lease token is no longer current: a newer holder owns the shared quota."""


@dataclass(frozen=True)
class Fence:
    """A lease a write is conditioned on: the write happens only while `token` is current.

    The lease item lives in `table` under key (`pk`, `sk`) with attributes `owner` and
    `fencing_token` (see connectors/state/lease.py).
    """

    table: str
    pk: str
    sk: str
    owner: str
    token: int
    # `check_fence` also refuses once less than this is left of the lease: its renewals are
    # failing, and a sender must not outlive a lease nobody could confirm.
    min_remaining_seconds: float = 0.0


@dataclass(frozen=True)
class BatchRecord:
    run_id: str
    destination_id: str
    audience_id: str
    op: str
    batch_number: int
    checksum: str
    ids: int
    state: BatchState = BatchState.PENDING
    attempts: int = 0
    error: str | None = None
    updated_at: str = ""

    @property
    def batch_key(self) -> str:
        return batch_key(self.run_id, self.destination_id, self.audience_id, self.op, self.batch_number, self.checksum)

    @property
    def idempotency_key(self) -> str:
        """A fixed-length key for destinations that accept one (HTTP `Idempotency-Key`)."""
        return hashlib.sha256(self.batch_key.encode()).hexdigest()

    def moved_to(self, state: BatchState, attempts: int, error: str | None = None) -> BatchRecord:
        return replace(self, state=state, attempts=attempts, error=error, updated_at=now_iso())


@dataclass(frozen=True)
class DeadLetter:
    batch_key: str
    run_id: str
    destination_id: str
    error: str
    attempts: int
    failed_at: str


def batch_key(run_id: str, destination_id: str, audience_id: str, op: str, batch_number: int, checksum: str) -> str:
    """Deterministic and readable; the checksum prefix makes a changed batch a new batch."""
    return f"{run_id}/{destination_id}/{audience_id}/{op}/{batch_number:06d}/{checksum[:16]}"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class StateStore(Protocol):
    def register(self, records: list[BatchRecord]) -> int:
        """Add batches as pending unless the ledger knows them; returns how many were new."""

    def get(self, key: str) -> BatchRecord | None: ...

    def batches(self, run_id: str, destination_id: str | None = None) -> list[BatchRecord]: ...

    def save(self, record: BatchRecord, fence: Fence | None = None) -> None:
        """Store the record's new state; raises `AlreadyDelivered` for a delivered batch and,
        with a fence, `FenceRejected` once the lease token is no longer current."""

    def consume_quota(self, quota_key: str, window: str, amount: int, limit: int, fence: Fence | None = None) -> bool:
        """Atomically add `amount` to the window's usage if it stays within `limit` (and, with a
        fence, only while the fence's lease token is current: `FenceRejected` otherwise)."""

    def quota_used(self, quota_key: str, window: str) -> int: ...

    def check_fence(self, fence: Fence) -> None:
        """Raise `FenceRejected` unless the fence's lease token is current (checked before each send)."""

    def add_dead_letter(self, letter: DeadLetter) -> None: ...

    def dead_letters(self, run_id: str | None = None) -> list[DeadLetter]: ...

    def remove_dead_letter(self, key: str) -> None: ...

    def audience_ids(self, destination_id: str) -> dict[str, str]:
        """Audience -> the platform's id of it, for audiences deliver created or found on the platform."""

    def record_audience_id(self, destination_id: str, audience: str, platform_id: str) -> str:
        """Keep the platform's id of an audience unless one is kept already; returns the id kept
        (two runs that created the same audience at once converge on the first recorded)."""
