"""The lease lock against DynamoDB on a moto server, with a controllable clock."""
import time
import uuid

import pytest

from audience_relay.connectors.state.dynamodb import create_table
from audience_relay.connectors.state.lease import Heartbeat, LeaseHeld, LeaseLock, LeaseLost


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table(moto_server):
    name = f"leases-{uuid.uuid4().hex[:8]}"
    create_table(name)
    return name


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lock(table, clock) -> LeaseLock:
    """A lock on the table whose time is the test's clock."""
    return LeaseLock(table, clock)


def test_only_one_holder_at_a_time_and_release_frees_it(lock):
    first = lock.acquire("google_ads_project", "job-a", 60)
    with pytest.raises(LeaseHeld, match="held by 'job-a'"):
        lock.acquire("google_ads_project", "job-b", 60)
    lock.release(first)
    second = lock.acquire("google_ads_project", "job-b", 60)
    assert second.token > first.token


def test_an_expired_lease_is_taken_over_and_the_old_holder_is_fenced_out(clock, lock):
    paused = lock.acquire("q", "job-a", 30)
    clock.now += 31  # job-a paused past its lease (GC, network partition)
    taker = lock.acquire("q", "job-b", 30)
    assert taker.token == paused.token + 1
    with pytest.raises(LeaseLost):
        lock.renew(paused, 30)  # the former holder cannot extend the new holder's lease
    with pytest.raises(LeaseLost):
        lock.check_fence(paused)  # and its writes are refused by the token
    lock.check_fence(taker)
    with pytest.raises(LeaseLost):
        lock.release(paused)  # nor release the lock it no longer holds
    with pytest.raises(LeaseHeld):
        lock.acquire("q", "job-c", 30)


def test_tokens_keep_growing_across_releases(table):
    lock = LeaseLock(table, Clock())
    tokens = []
    for owner in ("a", "b", "a", "c"):
        lease = lock.acquire("q", owner, 10)
        tokens.append(lease.token)
        lock.release(lease)
    assert tokens == sorted(tokens) and len(set(tokens)) == 4


def test_heartbeat_keeps_the_lease_alive_past_its_duration(table):
    lock = LeaseLock(table)
    with Heartbeat(lock, "q", "job-a", lease_seconds=1.5) as held:
        time.sleep(2.5)  # longer than one lease: only renewals keep it
        held.ensure_held()
        lock.check_fence(held.lease)
        with pytest.raises(LeaseHeld):
            lock.acquire("q", "job-b", 1.5)
    assert lock.acquire("q", "job-b", 1.5).owner == "job-b"  # released on exit


def test_heartbeat_reports_a_lost_lease(clock, lock):
    beat = Heartbeat(lock, "q", "job-a", lease_seconds=0.3)
    with beat:
        clock.now += 10
        lock.acquire("q", "job-b", 60)  # takes over the expired lease
        assert beat.lost.wait(2)
        with pytest.raises(LeaseLost):
            beat.ensure_held()


def test_a_stale_holder_cannot_spend_the_shared_quota(table, clock, lock):
    from audience_relay.connectors.state.dynamodb import DynamoStateStore
    from audience_relay.connectors.state.store import FenceRejected

    store = DynamoStateStore(table)  # leases and quota counters in one table
    stale = lock.acquire("google_ads_project", "job-a", 30)
    assert store.consume_quota("google_ads_project", "2026-11-23", 1, 10, fence=stale.fence(table))
    clock.now += 31
    current = lock.acquire("google_ads_project", "job-b", 30)
    with pytest.raises(FenceRejected, match="token 1 of 'job-a'"):
        store.consume_quota("google_ads_project", "2026-11-23", 1, 10, fence=stale.fence(table))
    assert store.consume_quota("google_ads_project", "2026-11-23", 1, 10, fence=current.fence(table))
    assert store.quota_used("google_ads_project", "2026-11-23") == 2  # the stale write never landed
    assert not store.consume_quota("google_ads_project", "2026-11-23", 9, 10, fence=current.fence(table))  # limit still holds


def test_a_stale_holder_cannot_write_the_ledger(table, clock, lock):
    from audience_relay.connectors.state.dynamodb import DynamoStateStore
    from audience_relay.connectors.state.store import BatchRecord, BatchState, FenceRejected

    store = DynamoStateStore(table)
    record = BatchRecord("r1", "google_dm", "aud", "add", 0, "ab" * 32, 10)
    stale = lock.acquire("google_ads_project", "job-a", 30)
    store.save(record.moved_to(BatchState.DEFERRED, 1), fence=stale.fence(table))
    clock.now += 31
    lock.acquire("google_ads_project", "job-b", 30)
    with pytest.raises(FenceRejected):
        store.save(record.moved_to(BatchState.DELIVERED, 2), fence=stale.fence(table))
    assert store.get(record.batch_key).state is BatchState.DEFERRED


def test_delivery_with_a_lost_lease_stops_and_leaves_the_rest_untouched(table, clock, lock):
    import random as rnd

    from audience_relay.connectors.delivery import deliver_batches
    from audience_relay.connectors.rate_limit import TokenBucket
    from audience_relay.connectors.retry import RetryPolicy
    from audience_relay.connectors.state.dynamodb import DynamoStateStore
    from tests.unit.connectors.test_delivery import Scripted, batches

    store = DynamoStateStore(table)
    stale = lock.acquire("google_ads_project", "job-a", 30)
    clock.now += 31
    lock.acquire("google_ads_project", "job-b", 30)
    work, destination = batches(3), Scripted()
    outcomes = deliver_batches(destination, work, store, TokenBucket(1000), None, RetryPolicy(), rnd.Random(0),
                               sleep=lambda s: None, fence=stale.fence(table))
    assert [o.state for o in outcomes] == ["fenced"] * 3
    assert destination.received == []  # the lease is checked before each request: nothing was sent
    assert all(store.get(b.record.batch_key) is None for b in work)  # no write of the stale holder landed


@pytest.mark.parametrize("skew_a, skew_b", [(5, -5), (-5, 5)])
def test_clock_skew_only_shortens_a_lease_by_twice_the_skew_and_the_token_covers_it(table, skew_a, skew_b):
    true_time = Clock()
    start = true_time.now
    a = LeaseLock(table, lambda: true_time.now + skew_a)
    b = LeaseLock(table, lambda: true_time.now + skew_b)
    lease = a.acquire("q", "host-a", 60)
    taken_at = None
    for elapsed in range(0, 91):  # A stopped renewing (paused); B keeps trying every second
        true_time.now = start + elapsed
        try:
            b.acquire("q", "host-b", 60)
            taken_at = elapsed
            break
        except LeaseHeld:
            continue
    assert taken_at is not None and taken_at >= 60 - 2 * abs(skew_a - skew_b) / 2 - 1
    with pytest.raises(LeaseLost):  # in any overlap, A's token is already stale
        a.check_fence(lease)


def test_a_job_keeps_the_state_machines_lease_alive_without_releasing_it(clock, lock):
    machine = lock.acquire("q", "execution-1", 60)
    clock.now += 50
    with Heartbeat(lock, "q", "execution-1", 600, held_token=machine.token) as beat:
        assert not beat.lost.is_set() and beat.lease.expires_at == clock.now + 600
    lock.check_fence(machine)  # still the machine's, with the same token, after the job ended
    lock.release(machine)


def test_a_job_handed_a_lease_that_was_taken_over_knows_at_once(clock, lock):
    stale = lock.acquire("q", "execution-1", 30)
    clock.now += 31
    lock.acquire("q", "execution-2", 30)
    with Heartbeat(lock, "q", "execution-1", 600, held_token=stale.token) as beat:
        assert beat.lost.is_set()
        with pytest.raises(LeaseLost):
            beat.ensure_held()


def test_a_failed_renewal_is_retried_within_seconds_not_a_third_of_the_lease_later(table):
    """Two missed beats leave a third of the lease; senders stop under a quarter. A renewal that
    failed (throttled, a transaction conflict on the lease item) is tried again soon."""
    import boto3
    from botocore.exceptions import ClientError

    resource = boto3.resource("dynamodb")
    failures = {"left": 1}

    def refuse_once(**_):
        if failures["left"]:
            failures["left"] -= 1
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "injected"}}, "UpdateItem")

    lock = LeaseLock(table, resource=resource)
    with Heartbeat(lock, "q", "job-a", lease_seconds=30) as beat:
        first = beat.lease.expires_at
        resource.meta.client.meta.events.register("before-call.dynamodb.UpdateItem", refuse_once)
        time.sleep(14)   # the first beat (10 s) fails; its retry must land before the next beat (20 s)
        renewed = beat.lease.expires_at
        resource.meta.client.meta.events.unregister("before-call.dynamodb.UpdateItem", refuse_once)
    assert beat.renewal_failures == 1 and renewed > first
