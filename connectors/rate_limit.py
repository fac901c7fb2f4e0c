"""A token bucket per destination, shared fairly by the partitions that deliver in parallel.

Each of `partitions` workers gets `1/partitions` of the destination's rate, so together they
never exceed it without talking to each other. The bucket holds at most `burst` tokens: with
`burst=1` requests are evenly spaced, which is what per-minute limits measured over any
sliding window need.
"""
from __future__ import annotations

import threading
import time
from typing import Callable


class TokenBucket:
    def __init__(
        self,
        requests_per_second: float,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if requests_per_second <= 0 or burst < 1:
            raise ValueError(f"rate must be positive and burst at least 1, got {requests_per_second}, {burst}")
        self.rate, self.burst = requests_per_second, burst
        self._clock, self._sleep = clock, sleep
        self._tokens, self._updated = burst, clock()
        self._lock = threading.Lock()

    @classmethod
    def partition_share(cls, requests_per_minute: int, partitions: int, **kwargs) -> TokenBucket:
        """The bucket of one of `partitions` workers that share a per-minute limit."""
        if partitions < 1:
            raise ValueError(f"partitions must be positive, got {partitions}")
        return cls(requests_per_minute / 60.0 / partitions, **kwargs)

    def acquire(self) -> float:
        """Take one token, waiting for it if needed; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            wait = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate
            # The token is spent now and the bucket's time moves to when it is paid for, so
            # concurrent callers queue behind each other instead of sharing one refill.
            self._tokens -= 1
        if wait:
            self._sleep(wait)
        return wait
