import pytest

from audience_relay.connectors.rate_limit import TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def requests_in_any_window(times, window):
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


def test_requests_are_spaced_to_the_rate():
    clock = FakeClock()
    bucket = TokenBucket(requests_per_second=5, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(50):
        bucket.acquire()
        times.append(clock.now)
    assert times[-1] == pytest.approx(49 / 5)
    assert requests_in_any_window(times, 1.0) <= 5


def test_partitions_together_stay_within_the_destination_rate():
    # Four workers share 300 requests/minute; each runs on its own timeline, as fast as allowed.
    times = []
    for _ in range(4):
        clock = FakeClock()
        bucket = TokenBucket.partition_share(300, 4, clock=clock, sleep=clock.sleep)
        for _ in range(200):
            bucket.acquire()
            times.append(clock.now)
    times.sort()
    assert requests_in_any_window(times, 60.0) <= 300 + 4  # each worker may start with one token
    assert requests_in_any_window(times, 60.0) >= 296  # and together they use the whole rate


def test_bad_rate_is_refused():
    with pytest.raises(ValueError):
        TokenBucket(0)
    with pytest.raises(ValueError):
        TokenBucket.partition_share(300, 0)
