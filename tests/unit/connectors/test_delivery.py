"""The delivery engine against a scripted destination, a SQLite ledger and a fake clock."""
import random
from datetime import datetime, timezone

import pytest

from audience_relay.connectors.delivery import deliver_batches
from audience_relay.connectors.destination import Batch, Destination, Receipt
from audience_relay.connectors.quota import DailyQuota
from audience_relay.connectors.rate_limit import TokenBucket
from audience_relay.connectors.retry import Failure, FailureKind, RetryPolicy
from audience_relay.connectors.state.sqlite import SqliteStateStore
from audience_relay.connectors.state.store import BatchRecord, BatchState


class Scripted(Destination):
    """Fails batches as scripted ({batch_number: [kinds...]}) and records what arrived."""

    def __init__(self, script=None):
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.received, self.opened, self.closed = [], 0, 0

    def open(self):
        self.opened += 1

    def close(self):
        self.closed += 1

    def send(self, batch):
        failures = self.script.get(batch.record.batch_number)
        if failures:
            raise RuntimeError(failures.pop(0))
        self.received.append(batch.record.batch_key)
        return Receipt(len(batch.members))

    def classify(self, error):
        return Failure(error.args[0], f"scripted {error.args[0].value}")


def batches(n, run="r1"):
    return [Batch(BatchRecord(run, "google_dm", "aud", "add", i, f"{i:064x}", 2), [("email", "k1"), ("email", "k2")]) for i in range(n)]


class Clock:
    def __init__(self):
        self.now = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)

    def __call__(self):
        return self.now


@pytest.fixture
def store(tmp_path):
    return SqliteStateStore(tmp_path / "state.db")


def run(destination, work, store, quota=None):
    bucket = TokenBucket(1000, sleep=lambda s: None)
    return deliver_batches(destination, work, store, bucket, quota, RetryPolicy(max_attempts=4), random.Random(0), sleep=lambda s: None)


def test_every_batch_is_delivered_once_and_a_rerun_skips_them(store):
    destination = Scripted()
    work = batches(5)
    store.register([b.record for b in work])
    assert [o.state for o in run(destination, work, store)] == ["delivered"] * 5
    assert [o.state for o in run(destination, work, store)] == ["skipped"] * 5
    assert len(destination.received) == 5 and destination.opened == destination.closed == 2
    assert {b.state for b in store.batches("r1")} == {BatchState.DELIVERED}


def test_transient_failures_are_retried_and_counted(store):
    destination = Scripted({1: [FailureKind.RETRYABLE, FailureKind.RATE_LIMITED]})
    outcomes = run(destination, batches(3), store)
    assert [o.state for o in outcomes] == ["delivered"] * 3
    assert outcomes[1].attempts == 3 and outcomes[1].retries == 2
    assert store.get(batches(3)[1].record.batch_key).attempts == 3


def test_permanent_failure_goes_to_the_dead_letter_store_and_others_proceed(store):
    destination = Scripted({0: [FailureKind.PERMANENT]})
    outcomes = run(destination, batches(2), store)
    assert [o.state for o in outcomes] == ["failed", "delivered"]
    [letter] = store.dead_letters("r1")
    assert letter.batch_key == batches(2)[0].record.batch_key and "permanent" in letter.error


def test_quota_exhaustion_defers_the_rest_and_resume_after_reset_completes(store):
    clock = Clock()
    quota = DailyQuota(store, "google_ads_project", 3, clock=clock)
    destination = Scripted({1: [FailureKind.RETRYABLE]})  # the retry also spends a request
    work = batches(5)
    first = run(destination, work, store, quota)
    assert [o.state for o in first] == ["delivered", "delivered", "deferred", "deferred", "deferred"]
    assert first[2].resume_at == "2026-11-24T00:00:00Z"  # RFC 3339 with Z: a Step Functions Wait timestamp
    assert [b.state for b in store.batches("r1")][2:] == [BatchState.DEFERRED] * 3
    clock.now = datetime(2026, 11, 24, 0, 0, 1, tzinfo=timezone.utc)
    second = run(destination, work, store, quota)
    assert [o.state for o in second] == ["skipped", "skipped", "delivered", "delivered", "delivered"]
    assert sorted(destination.received) == sorted(b.record.batch_key for b in work)


def test_destination_reported_quota_exhaustion_defers(store):
    destination = Scripted({0: [FailureKind.QUOTA_EXHAUSTED]})
    outcomes = run(destination, batches(2), store)
    assert [o.state for o in outcomes] == ["deferred", "deferred"] and destination.received == []


class FlakyStore(SqliteStateStore):
    """Fails the first `failures` ledger writes."""

    def __init__(self, path, failures):
        super().__init__(path)
        self.failures = failures

    def save(self, record):
        if self.failures:
            self.failures -= 1
            raise RuntimeError("database is locked")
        super().save(record)


def test_a_briefly_unavailable_ledger_is_retried_after_a_successful_send(tmp_path):
    store = FlakyStore(tmp_path / "s.db", failures=2)
    destination = Scripted()
    [outcome] = run(destination, batches(1), store)
    assert outcome.state == "delivered" and store.get(batches(1)[0].record.batch_key).state is BatchState.DELIVERED


def test_a_ledger_that_stays_down_is_reported_not_raised(tmp_path):
    store = FlakyStore(tmp_path / "s.db", failures=100)
    [outcome] = run(Scripted(), batches(1), store)
    assert outcome.state == "unrecorded"


def test_an_unreadable_batch_fails_alone(store):
    work = batches(2)
    work[0] = Batch(work[0].record, [], load_error="batch file x unreadable: OSError")
    outcomes = run(Scripted(), work, store)
    assert [o.state for o in outcomes] == ["failed", "delivered"] and "unreadable" in store.dead_letters("r1")[0].error


def test_a_classifier_bug_fails_the_batch_instead_of_the_task(store):
    class Broken(Scripted):
        def classify(self, error):
            raise AttributeError("'str' object has no attribute 'get'")

    outcomes = run(Broken({0: [FailureKind.RETRYABLE]}), batches(2), store)
    assert [o.state for o in outcomes] == ["failed", "delivered"]


def test_throttling_past_the_budget_defers_the_rest_instead_of_failing(store):
    destination = Scripted({0: [FailureKind.RATE_LIMITED] * 10})
    outcomes = run(destination, batches(3), store)
    assert [o.state for o in outcomes] == ["deferred"] * 3 and all(o.resume_at for o in outcomes)
    assert store.dead_letters("r1") == [] and len(destination.received) == 0


def test_a_batch_whose_dead_letter_cannot_be_written_is_not_settled_as_failed(moto_server):
    """FAILED settles a batch (deliver sends it no more; `dead-letters --replay` is its only way
    back), so it is written only once the dead letter is. The dead-letter write is refused at
    the SDK (an AccessDenied, as a role without the DLQ# items would get)."""
    import uuid

    import boto3
    from botocore.exceptions import ClientError

    from audience_relay.connectors.state.dynamodb import DynamoStateStore, create_table

    name = f"audience-relay-dlq-{uuid.uuid4().hex[:8]}"
    create_table(name)
    resource = boto3.resource("dynamodb")
    dynamo = DynamoStateStore(name, resource=resource)

    def refuse_dead_letters(params, **_):   # `params`: the request, its body the JSON sent
        if '"DLQ#' in (params["body"].decode() if isinstance(params["body"], bytes) else params["body"]):
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not authorized (injected)"}}, "PutItem")

    resource.meta.client.meta.events.register("before-call.dynamodb.PutItem", refuse_dead_letters)
    work = batches(2)
    dynamo.register([b.record for b in work])
    outcomes = run(Scripted({0: [FailureKind.PERMANENT]}), work, dynamo)
    assert [o.state for o in outcomes] == ["unrecorded", "delivered"]
    assert dynamo.get(work[0].record.batch_key).state is not BatchState.FAILED and dynamo.dead_letters("r1") == []
    resource.meta.client.meta.events.unregister("before-call.dynamodb.PutItem", refuse_dead_letters)
    again = run(Scripted({0: [FailureKind.PERMANENT]}), work, dynamo)   # the next delivery tries it again
    assert [o.state for o in again] == ["failed", "skipped"]
    assert [letter.batch_key for letter in dynamo.dead_letters("r1")] == [work[0].record.batch_key]
    assert dynamo.get(work[0].record.batch_key).state is BatchState.FAILED
