import random

import pytest

from audience_relay.connectors.retry import Failure, FailureKind, GaveUp, RetryPolicy, call_with_retries


class Flaky:
    """Fails with the given failures in turn, then succeeds."""

    def __init__(self, *failures: Failure) -> None:
        self.failures, self.calls = list(failures), 0

    def __call__(self):
        self.calls += 1
        if self.failures:
            raise RuntimeError(self.failures.pop(0))
        return "ok"


def classify(error: Exception) -> Failure:
    return error.args[0]


def run(send, policy=RetryPolicy()):
    waits = []
    result = call_with_retries(send, classify, policy, random.Random(1), waits.append)
    return result, waits


def test_transient_failures_are_retried_and_counted():
    (result, log), waits = run(Flaky(Failure(FailureKind.RETRYABLE, "503"), Failure(FailureKind.RETRYABLE, "timeout")))
    assert result == "ok" and log.attempts == 3 and log.retries == 2
    assert len(waits) == 2 and log.waited_seconds == pytest.approx(sum(waits))


def test_backoff_is_full_jitter_under_an_exponential_cap():
    policy = RetryPolicy(base_seconds=1, cap_seconds=8)
    rng = random.Random(7)
    for attempt in range(1, 8):
        samples = [policy.backoff(attempt, rng) for _ in range(2000)]
        ceiling = min(8, 2 ** (attempt - 1))
        assert 0 <= min(samples) and max(samples) <= ceiling
        assert max(samples) > 0.9 * ceiling  # the whole range is used, not a fixed delay


def test_retry_after_is_a_floor():
    (_, log), waits = run(Flaky(Failure(FailureKind.RATE_LIMITED, "429", retry_after=12.0)))
    assert waits == [12.0] and log.retries == 1


def test_permanent_failure_is_not_retried():
    send = Flaky(Failure(FailureKind.PERMANENT, "400 bad schema"))
    with pytest.raises(GaveUp) as gave_up:
        run(send)
    assert send.calls == 1 and gave_up.value.failure.kind is FailureKind.PERMANENT


def test_quota_exhaustion_stops_at_once():
    send = Flaky(Failure(FailureKind.QUOTA_EXHAUSTED, "429 RESOURCE_EXHAUSTED"))
    with pytest.raises(GaveUp) as gave_up:
        run(send)
    assert send.calls == 1 and gave_up.value.failure.kind is FailureKind.QUOTA_EXHAUSTED


def test_a_very_long_retry_after_becomes_a_deferral():
    send = Flaky(Failure(FailureKind.RATE_LIMITED, "429", retry_after=3600))
    with pytest.raises(GaveUp) as gave_up:
        run(send, RetryPolicy(max_retry_after_seconds=300))
    assert gave_up.value.failure.kind is FailureKind.QUOTA_EXHAUSTED and gave_up.value.failure.retry_after == 3600


def test_the_retry_budget_is_bounded():
    send = Flaky(*[Failure(FailureKind.RETRYABLE, "503")] * 10)
    with pytest.raises(GaveUp) as gave_up:
        run(send, RetryPolicy(max_attempts=4))
    assert send.calls == 4 and gave_up.value.log.retries == 3


def test_secrets_are_stripped_and_control_characters_refused(monkeypatch):
    from audience_relay.connectors.secrets import SecretUnavailable, resolve_secret

    monkeypatch.setenv("TOKEN_WITH_NEWLINE", "abc123\n")
    assert resolve_secret(env="TOKEN_WITH_NEWLINE") == "abc123"
    monkeypatch.setenv("TOKEN_WITH_BELL", "abc\x07def")
    with pytest.raises(SecretUnavailable, match="TOKEN_WITH_BELL: empty or holds control characters"):
        resolve_secret(env="TOKEN_WITH_BELL")
