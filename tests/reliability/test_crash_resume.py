"""kill -9 the deliver job at named and random moments, then resume: nothing is lost, nothing sent twice
that the destination did not de-duplicate, and the snapshot is committed once.

Each scenario delivers a fresh copy of one prepared run to the Meta emulator. The job is killed
with every process of its session (driver, JVM, Spark's Python workers) by a crash point inside
the code (`AUDIENCE_RELAY_CRASH_AT`), by the emulator while a request is in flight, or by the
test after a random delay; then it is started again without faults until it succeeds.
"""
from __future__ import annotations

import json
import random
import threading
import time
import uuid
from dataclasses import dataclass

import pytest

from audience_relay.cli.main import main
from audience_relay.connectors.failpoints import kill_session
from audience_relay.connectors.state.dynamodb import DynamoStateStore, create_table
from audience_relay.connectors.state.lease import LeaseLock
from audience_relay.testing.emulators.http_destination import EmulatorConfig, HttpDestinationEmulator
from tests.reliability.runs import RUN_ID, ledger_states, meta_destination, prepare_run, start_deliver, unrecorded_keys

pytestmark = pytest.mark.integration
DESTINATION = "meta_crash"
RPM = 3_000
WORKERS = 2

# Where the job dies. `:N` is the Nth pass through that point in one Python worker.
CRASH_POINTS = [
    "deliver.after_register",            # ledger registered, nothing sent
    "deliver.before_send:7",             # quota and rate token taken, request not yet made
    "deliver.after_send:5",              # the destination accepted it; the ledger does not know
    "deliver.after_ledger_write:9",      # recorded delivered, the outcome not yet returned to Spark
    "deliver.before_snapshot_commit",    # every batch delivered, the snapshot not yet committed
    "deliver.after_snapshot_commit",     # committed, the summary not yet written
]


# The same kills on the DynamoDB ledger under the machine's lease and its fence, as on AWS. The
# `ci` profile runs two of them (a request the ledger did not record, a commit not made); `full`
# runs every one.
DYNAMODB_CI_POINTS = {"deliver.after_send:5", "deliver.before_snapshot_commit"}
LEASE_SECONDS = 30.0
OWNER = "execution-crash"


@dataclass
class Store:
    """Where the run's ledger lives, and the deliver arguments that put it there."""

    kind: str
    table: str | None = None
    token: int | None = None

    def arguments(self) -> tuple[str, ...]:
        if self.kind == "sqlite":
            return ()
        return ("--state", f"dynamodb://{self.table}", "--fence-owner", OWNER, "--fence-token", str(self.token),
                "--lease-seconds", str(LEASE_SECONDS))

    def states(self, run) -> dict[str, str]:
        if self.kind == "sqlite":
            return ledger_states(run)
        return {r.batch_key: r.state.value for r in DynamoStateStore(self.table).batches(RUN_ID, DESTINATION)}

    def take_the_lease_again(self) -> None:
        """What the machine does before it delivers again: a new fencing token for the same execution."""
        if self.kind == "dynamodb":
            self.token = LeaseLock(self.table).acquire(DESTINATION, OWNER, LEASE_SECONDS).token


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request, profile) -> Store:
    if request.param == "sqlite":
        return Store("sqlite")
    crash_at = request.node.callspec.params.get("crash_at")
    if profile.name != "full" and crash_at not in DYNAMODB_CI_POINTS:
        pytest.skip("this kill on DynamoDB runs in RELIABILITY_PROFILE=full")
    request.getfixturevalue("moto_server")
    table = f"audience-relay-crash-{uuid.uuid4().hex[:8]}"
    create_table(table)
    found = Store("dynamodb", table)
    found.take_the_lease_again()
    return found


@pytest.fixture(scope="module")
def prepared(spark, profile, tmp_path_factory):
    batch_size = 5
    return prepare_run(tmp_path_factory.mktemp("crash"), profile.crash_batches * batch_size, [meta_destination(DESTINATION, batch_size, RPM)])


def pointer(run):
    path = run.out / "snapshots" / f"{DESTINATION}.json"
    return json.loads(path.read_text()) if path.exists() else None


def resume_until_done(run, emulator, store):
    """Deliver again, in this process's Spark (only the crash needs a process of its own)."""
    store.take_the_lease_again()
    code = main(["deliver", "--out", str(run.out), "--run-id", RUN_ID, "--config", str(run.config),
                 "--endpoint", f"{DESTINATION}={emulator.url}", "--workers", str(WORKERS), *store.arguments()])
    summary = json.loads((run.out / "runs" / RUN_ID / "delivery" / "summary.json").read_text())
    assert code == 0, summary
    return summary


def assert_complete_and_deduplicated(run, emulator, in_flight_at_crashes: set[str], summary, store):
    expected = run.session_keys(DESTINATION)
    assert summary["status"] == "SUCCEEDED" and summary["destinations"][DESTINATION]["snapshot_committed"]
    states = store.states(run)
    assert set(states.values()) == {"delivered"} and len(states) == len(run.batches())
    assert set(emulator.score.accepted) == expected  # every batch arrived, nothing foreign
    twice = {key for key, count in emulator.score.accepted.items() if count > 1}
    # A second copy only of a batch accepted by the destination but not yet recorded delivered
    # when the job died: the destination de-duplicates it by its idempotency key.
    assert twice <= in_flight_at_crashes, twice - in_flight_at_crashes
    accounting = summary["destinations"][DESTINATION]["accounting"]
    assert accounting["reconciles"] and accounting["rows"]["pending"] == 0
    assert accounting["rows"]["delivered"] == run.manifest["destinations"][DESTINATION]["accounting"]["rows"]["to_deliver"]
    assert emulator.score.max_requests_in(60.0) <= RPM


def in_flight_keys(run, emulator, store) -> set[str]:
    # A request the dead job had sent may still be answered after it died: read once the
    # emulator has accepted nothing more for half a second (CI saw one counted late).
    seen, quiet_since, deadline = None, time.monotonic(), time.monotonic() + 10
    while time.monotonic() < deadline:
        now = dict(emulator.score.accepted)
        if now != seen:
            seen, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= 0.5:
            break
        time.sleep(0.05)
    delivered = {key for key, state in store.states(run).items() if state == "delivered"}
    return unrecorded_keys(run, DESTINATION, emulator.score.accepted, delivered)


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_killed_at_a_crash_point_then_resumed_loses_nothing(prepared, crash_at, store, tmp_path):
    run = prepared.copy(tmp_path)
    with HttpDestinationEmulator(EmulatorConfig(requests_per_minute=RPM)) as emulator:
        job = start_deliver(run, {DESTINATION: emulator.url}, tmp_path / "logs", crash_at=crash_at, workers=WORKERS, extra=store.arguments())
        code, summary = job.wait()
        assert code == -9 and summary is None, f"the job was not killed at {crash_at}: exit {code}\n{job.stderr_tail()}"
        in_flight = in_flight_keys(run, emulator, store)
        assert len(in_flight) <= WORKERS  # one request per worker at most was in flight
        committed_at_crash = pointer(run)
        if crash_at == "deliver.after_register":
            assert not emulator.score.accepted and set(store.states(run).values()) == {"pending"}
        if crash_at == "deliver.before_snapshot_commit":
            assert committed_at_crash is None and set(store.states(run).values()) == {"delivered"}
        summary = resume_until_done(run, emulator, store)
    assert_complete_and_deduplicated(run, emulator, in_flight, summary, store)
    if crash_at == "deliver.after_snapshot_commit":
        assert committed_at_crash is not None and pointer(run) == committed_at_crash  # committed once, not again
    assert pointer(run)["run_id"] == RUN_ID


def test_killed_while_a_request_is_in_flight_then_resumed_loses_nothing(prepared, tmp_path):
    store = Store("sqlite")
    """The destination has processed the batch; the job dies before the answer reaches it."""
    run = prepared.copy(tmp_path)
    holder: dict = {}

    def kill_mid_request(accepted: int) -> None:
        if accepted == 11:
            kill_session(holder["job"].process.pid)

    with HttpDestinationEmulator(EmulatorConfig(requests_per_minute=RPM, on_accept=kill_mid_request)) as emulator:
        holder["job"] = start_deliver(run, {DESTINATION: emulator.url}, tmp_path / "logs", workers=WORKERS)
        code, _ = holder["job"].wait()
        assert code == -9
        in_flight = in_flight_keys(run, emulator, store)
        assert 1 <= len(in_flight) <= WORKERS  # at least the request that was being answered
        emulator.config.on_accept = None
        summary = resume_until_done(run, emulator, store)
    assert_complete_and_deduplicated(run, emulator, in_flight, summary, store)


def test_killed_at_random_moments_repeatedly_then_resumed_loses_nothing(prepared, profile, store, tmp_path):
    """Each attempt is killed after a random delay (starting Spark, sending, committing), until one finishes."""
    if not profile.random_crashes:
        pytest.skip("random crashes run in RELIABILITY_PROFILE=full")
    run = prepared.copy(tmp_path)
    rng = random.Random(20261201)
    in_flight: set[str] = set()
    kills = 0
    with HttpDestinationEmulator(EmulatorConfig(requests_per_minute=RPM)) as emulator:
        for _ in range(profile.random_crashes):
            store.take_the_lease_again()
            job = start_deliver(run, {DESTINATION: emulator.url}, tmp_path / "logs", workers=WORKERS, extra=store.arguments())
            timer = threading.Timer(rng.uniform(4.0, 20.0), kill_session, args=(job.process.pid,))
            timer.start()
            code, _ = job.wait()
            timer.cancel()
            assert code in (0, -9), job.stderr_tail()
            kills += code == -9
            in_flight |= in_flight_keys(run, emulator, store)
        summary = resume_until_done(run, emulator, store)
    assert kills >= 1
    assert_complete_and_deduplicated(run, emulator, in_flight, summary, store)
