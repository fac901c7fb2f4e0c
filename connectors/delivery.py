"""The delivery engine: send batches to one destination, honouring rate, quota and retry budget.

Runs wherever batches are: one call per Spark partition, with that partition's share of the
destination's rate. For each batch, in order:
1. a batch the ledger already holds as delivered is skipped (idempotent re-runs and resumes);
2. every attempt first takes a token (rate) and one request from the shared daily quota;
3. the batch is sent with retries; the outcome is saved in the ledger: `delivered`, `failed`
   (with a dead letter carrying the destination's error) or `deferred`;
4. once the quota is exhausted no further batch is attempted: the rest become `deferred`, to
   be resumed when the window resets.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

from connectors.destination import Batch, Destination
from connectors.quota import DailyQuota, QuotaExhausted
from connectors.rate_limit import TokenBucket
from connectors.retry import AttemptLog, Failure, FailureKind, GaveUp, RetryPolicy, call_with_retries
from connectors.state.store import AlreadyDelivered, BatchState, DeadLetter, StateStore, now_iso

MAX_ERROR_LENGTH = 2000


@dataclass(frozen=True)
class BatchOutcome:
    batch_key: str
    destination_id: str
    audience_id: str
    op: str
    ids: int
    state: str  # delivered | skipped (already delivered) | deferred | failed
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


def deliver_batches(
    destination: Destination,
    batches: Iterable[Batch],
    store: StateStore,
    bucket: TokenBucket,
    quota: DailyQuota | None,
    policy: RetryPolicy,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[BatchOutcome]:
    outcomes: list[BatchOutcome] = []
    deferred_until: str | None = None

    def classify(error: Exception) -> Failure:
        if isinstance(error, QuotaExhausted):
            return Failure(FailureKind.QUOTA_EXHAUSTED, str(error))
        return destination.classify(error)

    with destination:
        for batch in batches:
            record = batch.record
            known = store.get(record.batch_key)
            if known and known.state is BatchState.DELIVERED:
                outcomes.append(_outcome(batch, "skipped"))
                continue
            if deferred_until:
                store.save(record.moved_to(BatchState.DEFERRED, known.attempts if known else 0, "quota exhausted"))
                outcomes.append(_outcome(batch, "deferred", resume_at=deferred_until))
                continue
            attempts_before = known.attempts if known else 0

            def attempt() -> object:
                bucket.acquire()
                if quota:
                    quota.take()
                return destination.send(batch)

            try:
                _, log = call_with_retries(attempt, classify, policy, rng, sleep)
            except GaveUp as gave_up:
                log, failure = gave_up.log, gave_up.failure
                error = failure.message[:MAX_ERROR_LENGTH]
                if failure.kind is FailureKind.QUOTA_EXHAUSTED:
                    deferred_until = quota.current().resume_at.isoformat() if quota else _resume_after(failure)
                    store.save(record.moved_to(BatchState.DEFERRED, attempts_before + log.attempts, error))
                    outcomes.append(_outcome(batch, "deferred", log, error, deferred_until))
                    continue
                store.save(record.moved_to(BatchState.FAILED, attempts_before + log.attempts, error))
                store.add_dead_letter(
                    DeadLetter(record.batch_key, record.run_id, record.destination_id, error, attempts_before + log.attempts, now_iso())
                )
                outcomes.append(_outcome(batch, "failed", log, error))
                continue
            try:
                store.save(record.moved_to(BatchState.DELIVERED, attempts_before + log.attempts))
            except AlreadyDelivered:
                pass  # another worker finished the same batch first; the destination dedupes by key
            outcomes.append(_outcome(batch, "delivered", log))
    return outcomes


def _resume_after(failure: Failure) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=failure.retry_after or 0)).isoformat(timespec="seconds")
