"""The delivery engine: send batches to one destination, honouring rate, quota and retry budget.

Runs wherever batches are: one call per Spark partition, with that partition's share of the
destination's rate. For each batch, in order:
1. a batch the ledger already holds as delivered is skipped (idempotent re-runs and resumes);
2. every attempt first takes a token (rate) and one request from the shared daily quota;
3. the batch is sent with retries; the outcome is saved in the ledger: `delivered`, `failed`
   (with a dead letter carrying the destination's error) or `deferred`;
4. once the quota is exhausted (or the destination keeps throttling past the retry budget) no
   further batch is attempted: the rest become `deferred`, to be resumed at `resume_at`.
No exception leaves the engine: a batch that cannot be read, classified or recorded still
gets an outcome, so one bad batch never loses the outcomes of a whole Spark partition.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

from audience_relay.connectors.destination import Batch, Destination
from audience_relay.connectors.failpoints import crash_point
from audience_relay.connectors.quota import DailyQuota, QuotaExhausted, quota_window
from audience_relay.connectors.rate_limit import TokenBucket
from audience_relay.connectors.retry import AttemptLog, Failure, FailureKind, GaveUp, RetryPolicy, call_with_retries
from audience_relay.connectors.state.store import AlreadyDelivered, BatchState, DeadLetter, Fence, FenceRejected, StateStore, now_iso

MAX_ERROR_LENGTH = 2000


@dataclass(frozen=True)
class BatchOutcome:
    batch_key: str
    destination_id: str
    audience_id: str
    op: str
    ids: int
    state: str  # delivered | skipped (already delivered) | deferred | failed | unrecorded (ledger write failed)
    attempts: int
    retries: int
    waited_seconds: float
    error: str | None = None
    resume_at: str | None = None


def _outcome(batch: Batch, state: str, log: AttemptLog | None = None, error: str | None = None, resume_at: str | None = None) -> BatchOutcome:
    record = batch.record
    log = log or AttemptLog()
    return BatchOutcome(
        record.batch_key, record.destination_id, record.audience_id, record.op, record.ids, state,
        log.attempts, log.retries, round(log.waited_seconds, 3), error, resume_at,
    )


class StoreUnavailable(Exception):
    """The state store failed (locked file, throttled table): worth retrying, not the batch's fault."""


LEDGER_WRITE_ATTEMPTS = 5
MAX_DEFERRAL = timedelta(days=7)
THROTTLE_DEFERRAL = timedelta(minutes=1)


def _save(store: StateStore, record, sleep: Callable[[float], None], fence: Fence | None = None) -> bool:
    """Write the ledger with a few retries; False when the store stays unavailable.

    `FenceRejected` is not retried: the lease is gone and the caller must stop.
    """
    for attempt in range(LEDGER_WRITE_ATTEMPTS):
        try:
            store.save(record, fence=fence) if fence else store.save(record)
            return True
        except AlreadyDelivered:
            return True  # another worker recorded it first; nothing to add
        except FenceRejected:
            raise
        except Exception:  # noqa: BLE001 - any store failure is retried, then reported
            sleep(min(5.0, 0.2 * 2**attempt))
    return False


def rfc3339(moment: datetime) -> str:
    """UTC with a `Z`, to the second: what a Step Functions Wait `Timestamp` accepts, and sortable as text."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _next_reset(reset_timezone: str) -> str:
    return rfc3339(quota_window(datetime.now(timezone.utc), reset_timezone).resume_at)


def _resume_at(failure: Failure, quota: DailyQuota | None, reset_timezone: str) -> str:
    if failure.kind is FailureKind.QUOTA_EXHAUSTED:
        if quota:
            return rfc3339(quota.current().resume_at)
        if failure.retry_after is None:
            return _next_reset(reset_timezone)
    wait = timedelta(seconds=failure.retry_after) if failure.retry_after is not None else THROTTLE_DEFERRAL
    return rfc3339(datetime.now(timezone.utc) + min(wait, MAX_DEFERRAL))


def deliver_batches(
    destination: Destination,
    batches: Iterable[Batch],
    store: StateStore,
    bucket: TokenBucket,
    quota: DailyQuota | None,
    policy: RetryPolicy,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
    reset_timezone: str = "UTC",
    fence: Fence | None = None,
) -> list[BatchOutcome]:
    """Deliver `batches` in order; every batch ends with an outcome, none raises out of here.

    A batch whose send succeeded but whose ledger write kept failing is reported
    `unrecorded`: the next run sends it again and the destination de-duplicates it. With a
    `fence` (the lease token of the job sharing the quota), ledger writes are conditioned on
    it; once it is rejected the engine stops at once: the remaining batches are `fenced`,
    untouched, for the lease's new holder.
    """
    outcomes: list[BatchOutcome] = []
    deferred_until: str | None = None

    def classify(error: Exception) -> Failure:
        if isinstance(error, FenceRejected):
            raise error  # not a failure of the batch: the lease is gone, stop everything
        if isinstance(error, QuotaExhausted):
            return Failure(FailureKind.QUOTA_EXHAUSTED, str(error))
        if isinstance(error, StoreUnavailable):
            return Failure(FailureKind.RETRYABLE, f"state store unavailable: {type(error.__cause__).__name__}")
        try:
            return destination.classify(error)
        except Exception:  # noqa: BLE001 - a classifier bug must not lose the batch
            return Failure(FailureKind.PERMANENT, f"unclassified {type(error).__name__}")

    def save(record) -> bool:
        return _save(store, record, sleep, fence)

    def fail(batch: Batch, attempts: int, error: str, log: AttemptLog | None = None) -> None:
        """Dead letter first, then FAILED: FAILED settles the batch (deliver sends it no more),
        so it may only be written once `dead-letters --replay` can see the batch. A batch whose
        dead letter cannot be written stays unsettled and is tried again by the next delivery."""
        record = batch.record
        try:
            store.add_dead_letter(DeadLetter(record.batch_key, record.run_id, record.destination_id, error, attempts, now_iso()))
        except Exception:  # noqa: BLE001 - the outcome below still carries the error
            outcomes.append(_outcome(batch, "unrecorded", log, f"dead letter not written; {error}"))
            return
        recorded = save(record.moved_to(BatchState.FAILED, attempts, error))
        outcomes.append(_outcome(batch, "failed" if recorded else "unrecorded", log, error))

    def attempt_for(batch: Batch) -> Callable[[], object]:
        def attempt() -> object:
            bucket.acquire()
            try:
                if fence:
                    # Right before the request: a holder that lost the lease sends nothing more.
                    store.check_fence(fence)
                if quota:
                    quota.take()
            except (QuotaExhausted, FenceRejected):
                raise
            except Exception as error:
                raise StoreUnavailable() from error
            crash_point("deliver.before_send")
            receipt = destination.send(batch)
            crash_point("deliver.after_send")  # sent, not yet in the ledger
            return receipt

        return attempt

    def handle(batch: Batch) -> None:
        nonlocal deferred_until
        record = batch.record
        try:
            known = store.get(record.batch_key)
        except Exception as error:  # noqa: BLE001
            outcomes.append(_outcome(batch, "unrecorded", error=f"ledger read failed: {type(error).__name__}"))
            return
        if known and known.state is BatchState.DELIVERED:
            outcomes.append(_outcome(batch, "skipped"))
            return
        attempts_before = known.attempts if known else 0
        if deferred_until:
            save(record.moved_to(BatchState.DEFERRED, attempts_before, "deferred behind an exhausted quota or throttling"))
            outcomes.append(_outcome(batch, "deferred", resume_at=deferred_until))
            return
        if batch.load_error:
            fail(batch, attempts_before, batch.load_error)
            return
        try:
            _, log = call_with_retries(attempt_for(batch), classify, policy, rng, sleep)
        except GaveUp as gave_up:
            log, failure = gave_up.log, gave_up.failure
            error = failure.message[:MAX_ERROR_LENGTH]
            attempts = attempts_before + log.attempts
            if failure.kind in (FailureKind.QUOTA_EXHAUSTED, FailureKind.RATE_LIMITED):
                # Out of quota, or throttled past the retry budget: pressing on would only
                # spend requests; this batch and the rest wait for `resume_at`.
                deferred_until = _resume_at(failure, quota, reset_timezone)
                save(record.moved_to(BatchState.DEFERRED, attempts, error))
                outcomes.append(_outcome(batch, "deferred", log, error, deferred_until))
                return
            fail(batch, attempts, error, log)
            return
        recorded = save(record.moved_to(BatchState.DELIVERED, attempts_before + log.attempts))
        crash_point("deliver.after_ledger_write")
        outcomes.append(_outcome(batch, "delivered" if recorded else "unrecorded", log))

    pending = iter(batches)
    with destination:
        for batch in pending:
            try:
                handle(batch)
            except FenceRejected:
                # The lease is checked right before each request, so a batch is sent after a
                # takeover only if the lease changed hands within that instant; the new
                # holder finds it pending and the destination de-duplicates it.
                outcomes.append(_outcome(batch, "fenced", error="the lease was lost; stopped"))
                outcomes.extend(_outcome(rest, "fenced") for rest in pending)
                break
    return outcomes
