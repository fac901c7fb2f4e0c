"""Delivery to the HTTP destination emulator: rate, faults, quota deferral and resume."""
import hashlib
import random
import threading

import pytest

from audience_relay.connectors.delivery import deliver_batches
from audience_relay.connectors.destination import Batch
from audience_relay.connectors.destinations.google.client import GoogleDataManager
from audience_relay.connectors.destinations.meta.client import MetaCustomAudiences
from audience_relay.connectors.http.client import HttpApiDestination, InsecureEndpoint
from audience_relay.connectors.rate_limit import TokenBucket
from audience_relay.connectors.retry import RetryPolicy
from audience_relay.connectors.state.sqlite import SqliteStateStore
from audience_relay.connectors.state.store import BatchRecord, BatchState
from audience_relay.testing.emulators.http_destination import EmulatorConfig, HttpDestinationEmulator

pytestmark = pytest.mark.integration


def make_batches(count, size=50, destination="google_dm", run="r1"):
    work = []
    for number in range(count):
        op = "add" if number % 4 else "remove"
        members = sorted(("email", hashlib.sha256(f"{number}-{i}".encode()).hexdigest()) for i in range(size))
        checksum = hashlib.sha256("\n".join(f"{t}:{k}" for t, k in members).encode()).hexdigest()
        work.append(Batch(BatchRecord(run, destination, "aud_1", op, number, checksum, size), members))
    return work


def deliver(url, profile, work, store, partitions=1, rpm=6000, policy=RetryPolicy(base_seconds=0.05, cap_seconds=0.5, max_attempts=8)):
    """Deliver `work` split round-robin over `partitions` threads, each with its rate share."""
    outcomes, lock = [], threading.Lock()

    def worker(share):
        destination = HttpApiDestination(url, profile, token="test-token", timeout_seconds=0.5)
        result = deliver_batches(destination, share, store, TokenBucket.partition_share(rpm, partitions), None, policy, random.Random(7))
        with lock:
            outcomes.extend(result)

    threads = [threading.Thread(target=worker, args=(work[i::partitions],)) for i in range(partitions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_batches_arrive_once_within_the_rate_limit(tmp_path):
    store = SqliteStateStore(tmp_path / "s.db")
    work = make_batches(30)
    with HttpDestinationEmulator(EmulatorConfig(requests_per_minute=600)) as emulator:
        outcomes = deliver(emulator.url, GoogleDataManager(operating_account_id="123"), work, store, partitions=3, rpm=600)
    assert sorted(o.state for o in outcomes) == ["delivered"] * 30
    assert len(emulator.score.accepted) == 30 and emulator.score.duplicates == 0
    # 600/min is 10/s, plus one initial token per partition; requests are counted on arrival, so
    # uneven network latency may squeeze in a few more (20%) than the tokens granted in a second.
    assert emulator.score.max_requests_in(1.0) <= 10 * 1.2 + 3
    assert emulator.score.max_requests_in(60.0) <= 600
    assert emulator.score.refused["rate_limit"] == 0
    removed = emulator.score.members[("aud_1", "remove")]
    assert removed == {m for b in work if b.record.op == "remove" for m in b.members}


def test_faults_are_retried_and_nothing_is_lost(tmp_path):
    store = SqliteStateStore(tmp_path / "s.db")
    work = make_batches(120, size=20)
    store.register([b.record for b in work])
    faults = {"5xx": 0.10, "429": 0.05, "stall": 0.05, "drop": 0.05}
    with HttpDestinationEmulator(EmulatorConfig(fault_rates=faults, stall_seconds=1.0, seed=3)) as emulator:
        outcomes = deliver(emulator.url, MetaCustomAudiences(), work, store, partitions=2)
    assert sorted({o.state for o in outcomes}) == ["delivered"]
    assert {b.state for b in store.batches("r1")} == {BatchState.DELIVERED}
    assert sum(o.retries for o in outcomes) == sum(emulator.score.refused.values())
    # Every batch arrived; a second copy only where the first answer stalled past the timeout.
    assert len(emulator.score.accepted) == 120
    assert emulator.score.duplicates <= emulator.score.refused["stall"]


def test_daily_quota_defers_then_resume_after_reset_completes(tmp_path):
    store = SqliteStateStore(tmp_path / "s.db")
    work = make_batches(8)
    store.register([b.record for b in work])
    with HttpDestinationEmulator(EmulatorConfig(requests_per_day=5)) as emulator:
        first = deliver(emulator.url, GoogleDataManager(), work, store)
        assert [o.state for o in first] == ["delivered"] * 5 + ["deferred"] * 3
        emulator.next_day()
        second = deliver(emulator.url, GoogleDataManager(), work, store)
    assert [o.state for o in second] == ["skipped"] * 5 + ["delivered"] * 3
    assert len(emulator.score.accepted) == 8 and emulator.score.duplicates == 0


def test_plain_http_to_a_remote_host_is_refused():
    with pytest.raises(InsecureEndpoint):
        HttpApiDestination("http://ads.example.com", MetaCustomAudiences(), token="t")
    HttpApiDestination("https://graph.facebook.com", MetaCustomAudiences(), token="t")
