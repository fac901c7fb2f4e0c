"""One contract, two stores: SQLite (embedded) and DynamoDB (on a moto server)."""
import threading
import uuid

import boto3
import pytest

from audience_relay.connectors.state.dynamodb import DynamoStateStore, create_table
from audience_relay.connectors.state.sqlite import SqliteStateStore
from audience_relay.connectors.state.store import AlreadyDelivered, BatchRecord, BatchState, DeadLetter


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request, tmp_path):
    if request.param == "sqlite":
        yield SqliteStateStore(tmp_path / "state.db")
    else:
        request.getfixturevalue("moto_server")
        name = f"audience-relay-state-{uuid.uuid4().hex[:8]}"
        create_table(name)
        yield DynamoStateStore(name)


def batch(number=0, run="r1", destination="meta_ads", checksum="ab" * 32):
    return BatchRecord(run, destination, "aud", "add", number, checksum, 10_000)


def test_batch_key_is_deterministic_and_changes_with_content():
    assert batch().batch_key == "r1/meta_ads/aud/add/000000/abababababababab"
    assert batch(checksum="cd" * 32).batch_key != batch().batch_key
    assert len(batch().idempotency_key) == 64


def test_register_adds_pending_batches_once(store):
    assert store.register([batch(0), batch(1)]) == 2
    assert store.register([batch(0), batch(1), batch(2)]) == 1
    assert [(b.batch_number, b.state) for b in store.batches("r1")] == [(0, BatchState.PENDING), (1, BatchState.PENDING), (2, BatchState.PENDING)]


def test_a_delivered_batch_never_changes_again(store):
    store.register([batch(0)])
    store.save(batch(0).moved_to(BatchState.DELIVERED, attempts=2))
    with pytest.raises(AlreadyDelivered):
        store.save(batch(0).moved_to(BatchState.FAILED, attempts=3, error="late failure"))
    store.register([batch(0)])  # a re-run registering the same batch does not reset it
    got = store.get(batch(0).batch_key)
    assert (got.state, got.attempts, got.error) == (BatchState.DELIVERED, 2, None)


def test_batches_are_listed_per_run_and_destination(store):
    store.register([batch(0), batch(0, destination="google_dm"), batch(0, run="r2")])
    assert {b.destination_id for b in store.batches("r1")} == {"meta_ads", "google_dm"}
    assert [b.destination_id for b in store.batches("r1", "google_dm")] == ["google_dm"]
    assert store.get("r9/x/y/add/000000/0000000000000000") is None


def test_quota_is_never_exceeded_even_by_concurrent_consumers(store):
    results = []

    def consume():
        for _ in range(10):
            results.append(store.consume_quota("google_ads_project", "2026-11-23", 1, limit=25))

    threads = [threading.Thread(target=consume) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 25 and store.quota_used("google_ads_project", "2026-11-23") == 25
    assert store.quota_used("google_ads_project", "2026-11-24") == 0  # a new window starts empty


def test_quota_refuses_an_amount_larger_than_what_is_left(store):
    assert store.consume_quota("k", "w", 8, limit=10)
    assert not store.consume_quota("k", "w", 3, limit=10)
    assert store.consume_quota("k", "w", 2, limit=10)
    assert not store.consume_quota("k", "w2", 11, limit=10)


def test_dead_letters_keep_the_error_and_can_be_removed_for_replay(store):
    record = batch(3)
    letter = DeadLetter(record.batch_key, "r1", "meta_ads", "400: invalid schema", 1, "2026-11-23T00:00:00Z")
    store.add_dead_letter(letter)
    store.add_dead_letter(DeadLetter(batch(0, run="r2").batch_key, "r2", "meta_ads", "500", 6, "2026-11-23T00:00:00Z"))
    assert store.dead_letters("r1") == [letter]
    assert len(store.dead_letters()) == 2
    store.remove_dead_letter(record.batch_key)
    assert store.dead_letters("r1") == []


def test_a_platforms_audience_id_is_kept_once_and_the_first_recorded_wins(store):
    assert store.audience_ids("tiktok") == {}
    assert store.record_audience_id("tiktok", "high_value", "9000001") == "9000001"
    assert store.record_audience_id("tiktok", "high_value", "9000002") == "9000001"   # a run that created it too
    store.record_audience_id("tiktok", "lapsed", "9000003")
    store.record_audience_id("snap", "high_value", "abc")
    assert store.audience_ids("tiktok") == {"high_value": "9000001", "lapsed": "9000003"}


def test_dynamodb_items_carry_their_purge_time_and_leases_never_do(moto_server):
    from audience_relay.connectors.state.lease import LeaseLock

    name = f"audience-relay-state-{uuid.uuid4().hex[:8]}"
    create_table(name)
    store = DynamoStateStore(name, retention_days=30, clock=lambda: 1_000_000.0)
    store.register([batch(0)])
    store.save(batch(0).moved_to(BatchState.FAILED, attempts=1, error="refused"))
    store.consume_quota("k", "2026-11-23", 1, limit=5)
    store.add_dead_letter(DeadLetter(batch(0).batch_key, "r1", "meta_ads", "refused", 1, "2026-11-23T00:00:00Z"))
    LeaseLock(name).acquire("meta_ads", "owner-1", 60)
    items = {(i["pk"].split("#")[0], i["sk"].split("#")[0]): i for i in boto3.resource("dynamodb").Table(name).scan()["Items"]}
    assert items[("RUN", "BATCH")]["purge_at"] == 1_000_000 + 30 * 86_400
    assert items[("DLQ", "BATCH")]["purge_at"] == 1_000_000 + 30 * 86_400
    assert items[("QUOTA", "WINDOW")]["purge_at"] == 1_000_000 + 2 * 86_400
    assert "purge_at" not in items[("LEASE", "LEASE")]  # TTL would restart its fencing token
