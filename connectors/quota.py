"""Daily request quotas shared under a quota key, with windows that reset at local midnight.

Usage lives in the state store under (quota key, window), so every job and destination that
names the same key draws from one counter. Google's API quotas, for example, reset at
midnight Pacific time: `reset_timezone` says where the day starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from typing import Callable
from zoneinfo import ZoneInfo

from audience_relay.connectors.state.store import Fence, StateStore


@dataclass(frozen=True)
class QuotaWindow:
    window: str  # the local date the window covers, e.g. "2026-11-23"
    resume_at: datetime  # when the next window opens, in UTC


def quota_window(now: datetime, reset_timezone: str = "UTC") -> QuotaWindow:
    local = now.astimezone(ZoneInfo(reset_timezone))
    next_midnight = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=local.tzinfo)
    return QuotaWindow(local.date().isoformat(), next_midnight.astimezone(timezone.utc))


class QuotaExhausted(Exception):
    """The shared daily quota has no request left; delivery resumes at `resume_at`."""

    def __init__(self, quota_key: str, window: QuotaWindow) -> None:
        super().__init__(f"daily quota {quota_key!r} exhausted for {window.window}; resumes at {window.resume_at.isoformat()}")
        self.quota_key, self.window = quota_key, window


class DailyQuota:
    """Takes one request at a time from a shared daily quota, or raises `QuotaExhausted`."""

    def __init__(
        self,
        store: StateStore,
        quota_key: str,
        requests_per_day: int,
        reset_timezone: str = "UTC",
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        fence: Fence | None = None,
    ) -> None:
        self.store, self.quota_key, self.limit = store, quota_key, requests_per_day
        self.reset_timezone, self.clock, self.fence = reset_timezone, clock, fence

    def current(self) -> QuotaWindow:
        return quota_window(self.clock(), self.reset_timezone)

    def take(self, requests: int = 1) -> None:
        window = self.current()
        if not self.store.consume_quota(self.quota_key, window.window, requests, self.limit, fence=self.fence):
            raise QuotaExhausted(self.quota_key, window)

    def used(self) -> int:
        return self.store.quota_used(self.quota_key, self.current().window)
