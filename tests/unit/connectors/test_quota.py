from datetime import datetime, timezone

import pytest

from audience_relay.connectors.quota import DailyQuota, QuotaExhausted, quota_window
from audience_relay.connectors.state.sqlite import SqliteStateStore


def test_window_resets_at_local_midnight():
    # 07:30 UTC is still the previous day in Los Angeles (23:30 PST).
    window = quota_window(datetime(2026, 11, 23, 7, 30, tzinfo=timezone.utc), "America/Los_Angeles")
    assert window.window == "2026-11-22"
    assert window.resume_at == datetime(2026, 11, 23, 8, 0, tzinfo=timezone.utc)
    assert quota_window(datetime(2026, 11, 23, 23, 59, tzinfo=timezone.utc)).resume_at == datetime(2026, 11, 24, tzinfo=timezone.utc)


def test_quota_shared_by_key_is_exhausted_together_and_resets_next_day(tmp_path):
    store = SqliteStateStore(tmp_path / "s.db")
    now = [datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)]
    meta = DailyQuota(store, "shared", 3, clock=lambda: now[0])
    google = DailyQuota(store, "shared", 3, clock=lambda: now[0])
    meta.take()
    google.take()
    meta.take()
    with pytest.raises(QuotaExhausted) as exhausted:
        google.take()
    assert exhausted.value.window.resume_at == datetime(2026, 11, 24, tzinfo=timezone.utc)
    now[0] = datetime(2026, 11, 24, 0, 0, 1, tzinfo=timezone.utc)
    google.take()
    assert google.used() == 1
