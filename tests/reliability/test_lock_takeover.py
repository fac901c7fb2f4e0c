"""The DynamoDB lease lock between real deliver processes: a killed holder's lease is taken over
only after it expires, a paused former holder can no longer write, and jobs sharing a daily
quota never spend more than it together.

The deliver jobs run as the state machine runs them: with the lease's owner and fencing token
(`--fence-owner/--fence-token`), heartbeating it every third of `--lease-seconds`, the ledger
and the quota in DynamoDB (moto server).
"""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from audience_relay.connectors.state.dynamodb import DynamoStateStore, create_table
from audience_relay.connectors.state.lease import LeaseHeld, LeaseLock
from audience_relay.connectors.state.store import BatchState
from audience_relay.testing.emulators.http_destination import EmulatorConfig, HttpDestinationEmulator
from tests.reliability.runs import RUN_ID, meta_destination, prepare_run, start_deliver, unrecorded_keys

pytestmark = pytest.mark.integration
LEASE_SECONDS = 6.0
WORKERS = 2
HOLD_SECONDS = 90.0  # how long an emulator holds answers waiting for the other job to start


@pytest.fixture(scope="module")
def prepared(spark, moto_server, profile, tmp_path_factory):
    batch_size = 5
    destinations = [
        meta_destination("meta_lease", batch_size, rpm=1_200),
        # A long client timeout: the quota test holds first answers until both jobs have started.
        meta_destination("meta_q1", batch_size, rpm=6_000, quota={"requests": 40, "key": "shared_project"}, timeout_seconds=HOLD_SECONDS + 30),
        meta_destination("meta_q2", batch_size, rpm=6_000, quota={"requests": 40, "key": "shared_project"}, timeout_seconds=HOLD_SECONDS + 30),
    ]
    return prepare_run(tmp_path_factory.mktemp("lease"), profile.crash_batches * batch_size, destinations)


@pytest.fixture
def table(moto_server) -> str:
    name = f"audience-relay-lease-{uuid.uuid4().hex[:8]}"
    create_table(name)
    return name


def fenced(table: str, owner: str, token: int, destination: str) -> tuple[str, ...]:
    return ("--state", f"dynamodb://{table}", "--destination", destination, "--fence-owner", owner,
            "--fence-token", str(token), "--lease-seconds", str(LEASE_SECONDS))


def ledger(table: str, destination: str) -> dict[str, BatchState]:
    return {r.batch_key: r.state for r in DynamoStateStore(table).batches(RUN_ID, destination)}


def take_over_after_expiry(lock: LeaseLock, name: str, owner: str, deadline_seconds: float = 30.0):
    """Acquire as soon as the old lease expires; it must be refused until then."""
    started = time.monotonic()
    while True:
        try:
            return lock.acquire(name, owner, LEASE_SECONDS * 10), time.monotonic() - started
        except LeaseHeld:
            assert time.monotonic() - started < deadline_seconds, "the dead holder's lease never expired"
            time.sleep(0.2)


def test_a_killed_holders_lease_is_taken_over_after_expiry_and_the_run_completes(prepared, table, tmp_path):
    run, destination = prepared.copy(tmp_path), "meta_lease"
    lock = LeaseLock(table)
    first = lock.acquire(destination, "execution-1", LEASE_SECONDS)
    holder: dict = {}

    def kill_mid_run(accepted: int) -> None:
        if accepted == 25:
            holder["job"].kill()
            holder["killed_at"] = time.monotonic()

    with HttpDestinationEmulator(EmulatorConfig(requests_per_minute=1_200, on_accept=kill_mid_run)) as emulator:
        holder["job"] = start_deliver(run, {destination: emulator.url}, tmp_path / "logs", extra=fenced(table, "execution-1", first.token, destination))
        code, _ = holder["job"].wait()
        assert code == -9, holder["job"].stderr_tail()
        emulator.config.on_accept = None
        # The job had renewed the lease while it ran: nobody gets it until that renewal expires.
        with pytest.raises(LeaseHeld):
            lock.acquire(destination, "execution-2", LEASE_SECONDS)
        second, waited = take_over_after_expiry(lock, destination, "execution-2")
        assert second.token > first.token and waited > 0
        delivered = {k for k, state in ledger(table, destination).items() if state is BatchState.DELIVERED}
        in_flight = unrecorded_keys(run, destination, emulator.score.accepted, delivered)
        job = start_deliver(run, {destination: emulator.url}, tmp_path / "logs", extra=fenced(table, "execution-2", second.token, destination))
        code, summary = job.wait()
    assert code == 0 and summary["status"] == "SUCCEEDED", job.stderr_tail()
    assert set(ledger(table, destination).values()) == {BatchState.DELIVERED}
    assert set(emulator.score.accepted) == run.session_keys(destination)
    twice = {k for k, n in emulator.score.accepted.items() if n > 1}
    assert twice <= in_flight and len(in_flight) <= WORKERS


def test_a_paused_former_holder_is_fenced_out_when_it_wakes(prepared, table, tmp_path):
    """SIGSTOP the holder until its lease expires and is taken over; on SIGCONT the old job sends
    nothing new, its ledger writes are refused, and it does not renew the lease back; the new
    holder then finishes the run."""
    run, destination = prepared.copy(tmp_path), "meta_lease"
    lock = LeaseLock(table)
    first = lock.acquire(destination, "execution-1", LEASE_SECONDS)
    holder: dict = {}
    paused = threading.Event()

    def pause_mid_run(accepted: int) -> None:
        if accepted == 25:
            holder["job"].pause()
            paused.set()

    with HttpDestinationEmulator(EmulatorConfig(requests_per_minute=1_200, on_accept=pause_mid_run)) as old_view, \
            HttpDestinationEmulator(EmulatorConfig(requests_per_minute=1_200)) as new_view:
        holder["job"] = start_deliver(run, {destination: old_view.url}, tmp_path / "logs", extra=fenced(table, "execution-1", first.token, destination))
        # Take over only once it is paused (on a loaded machine a heartbeat may come late and
        # lose the lease earlier; the pause must still come first, or it would never be undone).
        assert paused.wait(300), holder["job"].stderr_tail()
        second, _ = take_over_after_expiry(lock, destination, "execution-2", deadline_seconds=120)
        assert holder["job"].process.poll() is None  # still there, only paused
        delivered_at_takeover = {k for k, state in ledger(table, destination).items() if state is BatchState.DELIVERED}
        woke_at = time.monotonic()
        holder["job"].resume()
        old_code, old_summary = holder["job"].wait()
        assert old_code == 1 and old_summary["status"] == "FAILED", holder["job"].stderr_tail()
        assert old_summary["destinations"][destination]["fenced"] > 0
        # Awake, it started no new request: at most the ones already past the fence check.
        assert len([t for t in old_view.score.request_times if t >= woke_at]) <= WORKERS
        # Its ledger writes after the takeover were refused: not one more batch recorded delivered.
        assert {k for k, state in ledger(table, destination).items() if state is BatchState.DELIVERED} == delivered_at_takeover
        item = lock._table.get_item(Key={"pk": f"LEASE#{destination}", "sk": "LEASE"}, ConsistentRead=True)["Item"]
        assert item["owner"] == "execution-2" and int(item["fencing_token"]) == second.token  # not renewed back
        in_flight = unrecorded_keys(run, destination, old_view.score.accepted, delivered_at_takeover)
        assert len(in_flight) <= 2 * WORKERS  # in flight at the pause, or started just before the fence check
        job = start_deliver(run, {destination: new_view.url}, tmp_path / "logs", extra=fenced(table, "execution-2", second.token, destination))
        code, summary = job.wait()
    assert code == 0 and summary["status"] == "SUCCEEDED", job.stderr_tail()
    assert set(ledger(table, destination).values()) == {BatchState.DELIVERED}
    assert set(old_view.score.accepted) | set(new_view.score.accepted) == run.session_keys(destination)
    assert set(old_view.score.accepted) & set(new_view.score.accepted) <= in_flight  # sent twice only if in flight


def test_two_jobs_sharing_a_daily_quota_never_spend_more_than_it_together(prepared, table, tmp_path):
    """Two deliver processes, one per destination, on one quota key, at the same time.

    Each emulator holds its first answers until the other has accepted a batch too: on a slow
    machine one job could otherwise spend the whole quota before the other started."""
    run = prepared.copy(tmp_path)
    quota = 40
    assert len(run.batches("meta_q1")) + len(run.batches("meta_q2")) > quota
    started = {"meta_q1": threading.Event(), "meta_q2": threading.Event()}

    def hold_until_both_started(mine: str, other: str):
        def on_accept(_: int) -> None:
            started[mine].set()
            started[other].wait(HOLD_SECONDS)
        return on_accept

    with HttpDestinationEmulator(EmulatorConfig(on_accept=hold_until_both_started("meta_q1", "meta_q2"))) as first, \
            HttpDestinationEmulator(EmulatorConfig(on_accept=hold_until_both_started("meta_q2", "meta_q1"))) as second:
        jobs = [
            start_deliver(run, {"meta_q1": first.url}, tmp_path / "logs", extra=("--state", f"dynamodb://{table}", "--destination", "meta_q1")),
            start_deliver(run, {"meta_q2": second.url}, tmp_path / "logs", extra=("--state", f"dynamodb://{table}", "--destination", "meta_q2")),
        ]
        results = [job.wait() for job in jobs]
    for (code, summary), job in zip(results, jobs):
        assert code == 3 and summary["status"] == "QUOTA_DEFERRED" and summary["resume_at"], job.stderr_tail()
    sent = len(first.score.request_times) + len(second.score.request_times)
    assert sent == quota  # together exactly the quota: not one request more, none wasted
    store = DynamoStateStore(table)
    delivered = [r for r in store.batches(RUN_ID) if r.state is BatchState.DELIVERED]
    assert len(delivered) == quota
    assert all(r.state in (BatchState.DELIVERED, BatchState.DEFERRED, BatchState.PENDING) for r in store.batches(RUN_ID))
    assert len(first.score.request_times) > 0 and len(second.score.request_times) > 0  # both really ran at once
