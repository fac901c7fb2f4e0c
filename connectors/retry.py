"""Retries with exponential backoff and full jitter, `Retry-After` honoured, a bounded budget.

Full jitter (sleep a uniform random time in [0, min(cap, base * 2**attempt)]) spreads the
retries of many partitions hitting the same destination, so they do not retry in lockstep.
A server's `Retry-After` is a floor: we never come back sooner than it asks.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable


class FailureKind(str, Enum):
    """How a failed send should be handled."""

    RETRYABLE = "retryable"  # 5xx, timeouts, dropped connections: try again after a backoff
    RATE_LIMITED = "rate_limited"  # 429 or the API's throttling code: wait (Retry-After) and retry
    QUOTA_EXHAUSTED = "quota_exhausted"  # the daily quota is gone: stop, defer to the reset
    PERMANENT = "permanent"  # the destination rejected the batch itself: dead-letter it


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    message: str
    retry_after: float | None = None  # seconds, from the destination


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float = 0.5
    cap_seconds: float = 30.0
    max_attempts: int = 6  # the retry budget of one batch: attempts, not retries
    max_retry_after_seconds: float = 300.0  # a longer Retry-After is treated as a deferral

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_seconds < 0 or self.cap_seconds < self.base_seconds:
            raise ValueError(f"invalid retry policy {self}")

    def backoff(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt number `attempt + 1` (attempt counts from 1)."""
        jitter = rng.uniform(0.0, min(self.cap_seconds, self.base_seconds * 2 ** (attempt - 1)))
        return max(jitter, retry_after or 0.0)


@dataclass
class AttemptLog:
    """Retry accounting for one batch: what was tried, how long we waited, how it ended."""

    attempts: int = 0
    waited_seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)

    @property
    def retries(self) -> int:
        return max(0, self.attempts - 1)


class GaveUp(Exception):
    """The batch could not be sent: the last failure says why (permanent, quota, budget spent)."""

    def __init__(self, failure: Failure, log: AttemptLog) -> None:
        super().__init__(failure.message)
        self.failure, self.log = failure, log


def call_with_retries(
    send: Callable[[], object],
    classify: Callable[[Exception], Failure],
    policy: RetryPolicy,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[object, AttemptLog]:
    """Call `send` until it succeeds, the failure is not worth retrying, or the budget is spent.

    Returns the result and the attempt log; raises `GaveUp` carrying both otherwise. Quota
    exhaustion and permanent failures end at once: retrying cannot help them.
    """
    rng = rng or random.Random()
    log = AttemptLog()
    while True:
        log.attempts += 1
        try:
            return send(), log
        except Exception as error:  # noqa: BLE001 - classify decides what each failure means
            failure = classify(error)
        log.failures.append(failure)
        if failure.kind in (FailureKind.PERMANENT, FailureKind.QUOTA_EXHAUSTED):
            raise GaveUp(failure, log)
        if failure.retry_after is not None and failure.retry_after > policy.max_retry_after_seconds:
            raise GaveUp(Failure(FailureKind.QUOTA_EXHAUSTED, failure.message, failure.retry_after), log)
        if log.attempts >= policy.max_attempts:
            raise GaveUp(failure, log)
        wait = policy.backoff(log.attempts, rng, failure.retry_after)
        log.waited_seconds += wait
        sleep(wait)
