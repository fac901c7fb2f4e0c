"""The shared suite every HTTP API destination passes, one parametrized run per registered profile:
delivery within the rate limit, faults retried with nothing lost, the daily quota deferring the
run, refusals dead-lettered without raw identifiers, the platform's batch cap and id format, and
its audience report read over every page. The emulator answers each platform its own way."""
import hashlib
import random
import threading

import pytest

from audience_relay.connectors.delivery import deliver_batches
from audience_relay.connectors.destination import Batch
from audience_relay.connectors.destinations.google.client import GoogleDataManager
from audience_relay.connectors.destinations.linkedin.client import LinkedInDmpSegments
from audience_relay.connectors.destinations.meta.client import MetaCustomAudiences
from audience_relay.connectors.destinations.pinterest.client import PinterestCustomerLists
from audience_relay.connectors.destinations.registry import REGISTRY
from audience_relay.connectors.destinations.snapchat.client import SnapchatAudienceMatch
from audience_relay.connectors.destinations.tiktok.client import TikTokAudiences
from audience_relay.connectors.destinations.x.client import XCustomAudiences
from audience_relay.connectors.http.client import HttpApiDestination, InsecureEndpoint
from audience_relay.connectors.rate_limit import TokenBucket
from audience_relay.connectors.retry import RetryPolicy
from audience_relay.connectors.state.sqlite import SqliteStateStore
from audience_relay.connectors.state.store import BatchRecord, BatchState
from audience_relay.testing.emulators.http_destination import EmulatorConfig, HttpDestinationEmulator
from audience_relay.testing.emulators.platforms import DIALECTS
from tests.integration.platforms import OAUTH1_KEYS, secret

pytestmark = pytest.mark.integration

# Each HTTP profile's request shape, as deliver builds it for an account of the emulator at `url`.
PLATFORMS = {
    "meta_custom_audiences": lambda url: MetaCustomAudiences(),
    "google_data_manager": lambda url: GoogleDataManager(operating_account_id="1234567890"),
    "tiktok_audiences": lambda url: TikTokAudiences(advertiser_id="7000000000000000001"),
    "snapchat_audience_match": lambda url: SnapchatAudienceMatch(),
    "linkedin_dmp_segments": lambda url: LinkedInDmpSegments(),
    "x_custom_audiences": lambda url: XCustomAudiences(base_url=url, account_id="18ce54d4x5t"),
    "pinterest_customer_lists": lambda url: PinterestCustomerLists(ad_account_id="549755885175"),
}
TOKENS = {"x_custom_audiences": secret("x_custom_audiences", "")}   # OAuth 1.0a: four values, the emulator verifies
AUDIENCE_IDS = {"aud_1": "5550001", "aud_2": "5550002", "aud_3": "5550003"}   # numeric: every platform's form
FAST_RETRIES = RetryPolicy(base_seconds=0.05, cap_seconds=0.5, max_attempts=8)


def emulating(**settings) -> EmulatorConfig:
    """The emulator's settings; X's requests have their OAuth 1.0a signatures verified."""
    return EmulatorConfig(oauth1_keys=OAUTH1_KEYS, **settings)


def test_every_registered_http_profile_is_in_the_suite():
    assert set(PLATFORMS) == {name for name, d in REGISTRY.items() if d.profile.kind == "http_api"}


def make_batches(count, size=50, audiences=("aud_1",), run="r1"):
    work = []
    for number in range(count):
        op = "add" if number % 4 else "remove"
        members = sorted(("email", hashlib.sha256(f"{number}-{i}@example.com".encode()).hexdigest()) for i in range(size))
        checksum = hashlib.sha256("\n".join(f"{t}:{k}" for t, k in members).encode()).hexdigest()
        work.append(Batch(BatchRecord(run, "dest", audiences[number % len(audiences)], op, number, checksum, size), members))
    return work


def connector(url, platform, timeout_seconds=5.0):
    return HttpApiDestination(url, PLATFORMS[platform](url), token=TOKENS.get(platform, "test-token"), timeout_seconds=timeout_seconds,
                              audience_ids=AUDIENCE_IDS)


def deliver(url, platform, work, store, partitions=1, rpm=6000, policy=FAST_RETRIES, timeout_seconds=5.0):
    """Deliver `work` split round-robin over `partitions` threads, each with its rate share. The
    timeout is generous but where a test stalls answers: a loaded machine can take longer than
    a short one to answer, and a timed-out refusal is sent again (CI showed it at 6ab3768)."""
    outcomes, lock = [], threading.Lock()

    def worker(share):
        result = deliver_batches(connector(url, platform, timeout_seconds), share, store, TokenBucket.partition_share(rpm, partitions), None, policy,
                                 random.Random(7))
        with lock:
            outcomes.extend(result)

    threads = [threading.Thread(target=worker, args=(work[i::partitions],)) for i in range(partitions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.mark.parametrize("platform", PLATFORMS)
def test_batches_arrive_once_within_the_rate_limit_and_the_audience_holds_the_adds_less_the_removes(platform, tmp_path):
    store = SqliteStateStore(tmp_path / "s.db")
    work = make_batches(30)
    with HttpDestinationEmulator(emulating(requests_per_minute=600)) as emulator:
        outcomes = deliver(emulator.url, platform, work, store, partitions=3, rpm=600)
    assert sorted(o.state for o in outcomes) == ["delivered"] * 30
    assert len(emulator.score.accepted) == 30 and emulator.score.duplicates == 0
    # 600/min is 10/s, plus one initial token per partition; counted on arrival, uneven latency
    # may squeeze in a few more (20%) than the tokens granted in a second.
    assert emulator.score.max_requests_in(1.0) <= 10 * 1.2 + 3 and emulator.score.refused["rate_limit"] == 0
    held = set()
    for batch in work:   # in order: each batch's members added or removed
        held = held | set(batch.members) if batch.record.op == "add" else held - set(batch.members)
    assert emulator.score.held[AUDIENCE_IDS["aud_1"]] == held


@pytest.mark.parametrize("platform", PLATFORMS)
def test_faults_are_retried_and_nothing_is_lost(platform, tmp_path):
    store = SqliteStateStore(tmp_path / "s.db")
    work = make_batches(80, size=20)
    store.register([b.record for b in work])
    faults = {"5xx": 0.10, "429": 0.05, "stall": 0.05, "drop": 0.05}
    with HttpDestinationEmulator(emulating(fault_rates=faults, stall_seconds=1.0, fault_retry_after=0.1, seed=3)) as emulator:
        outcomes = deliver(emulator.url, platform, work, store, partitions=2, timeout_seconds=0.5)   # shorter than a 1 s stall
    assert sorted({o.state for o in outcomes}) == ["delivered"]
    assert {b.state for b in store.batches("r1")} == {BatchState.DELIVERED}
    assert sum(o.retries for o in outcomes) == sum(emulator.score.refused.values())
    assert emulator.score.refused["5xx"] and emulator.score.refused["429"]
    # Every batch arrived; a second copy only where the first answer stalled past the timeout.
    assert len(emulator.score.accepted) == 80 and emulator.score.duplicates <= emulator.score.refused["stall"]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_the_daily_quota_defers_the_rest_and_a_resume_after_the_reset_completes(platform, tmp_path):
    store = SqliteStateStore(tmp_path / "s.db")
    work = make_batches(8)
    store.register([b.record for b in work])
    with HttpDestinationEmulator(emulating(requests_per_day=5)) as emulator:
        first = deliver(emulator.url, platform, work, store)
        assert [o.state for o in first] == ["delivered"] * 5 + ["deferred"] * 3
        emulator.next_day()
        second = deliver(emulator.url, platform, work, store)
    assert [o.state for o in second] == ["skipped"] * 5 + ["delivered"] * 3
    assert len(emulator.score.accepted) == 8 and emulator.score.duplicates == 0


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_refusal_is_dead_lettered_with_the_platforms_reason_and_no_identifier(platform, tmp_path):
    store = SqliteStateStore(tmp_path / "s.db")
    work = make_batches(2, size=5)
    store.register([b.record for b in work])
    with HttpDestinationEmulator(emulating(refuse_echoing=True)) as emulator:
        outcomes = deliver(emulator.url, platform, work, store)
    assert [o.state for o in outcomes] == ["failed", "failed"] and all(o.attempts == 1 for o in outcomes)
    letters = store.dead_letters("r1")
    assert len(letters) == 2 and all(letter.error for letter in letters)
    stored = " ".join(letter.error for letter in letters) + " ".join(o.error for o in outcomes)
    assert not any(key in stored or key.upper() in stored for batch in work for _, key in batch.members)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_batch_above_the_platforms_cap_is_refused_and_dead_lettered(platform, tmp_path):
    store = SqliteStateStore(tmp_path / "s.db")
    cap = REGISTRY[platform].profile.max_batch_size
    with HttpDestinationEmulator(emulating(max_batch=min(cap, 10))) as emulator:
        outcomes = deliver(emulator.url, platform, make_batches(1, size=11), store)
    assert [o.state for o in outcomes] == ["failed"] and emulator.score.refused["oversize"] == 1


@pytest.mark.parametrize("platform", [dialect.name for dialect in DIALECTS])
def test_ids_not_in_the_platforms_format_are_refused(platform, tmp_path):
    store = SqliteStateStore(tmp_path / "s.db")
    batch = make_batches(1, size=3)[0]
    clear = Batch(batch.record, [("email", f"Person{i}@Example.com") for i in range(3)])   # in clear, and not even lower-cased
    with HttpDestinationEmulator(emulating()) as emulator:
        outcomes = deliver(emulator.url, platform, [clear], store)
    assert [o.state for o in outcomes] == ["failed"] and emulator.score.refused["malformed"] == 1
    assert "person0@example.com" not in outcomes[0].error.lower()


@pytest.mark.parametrize("platform", PLATFORMS)
def test_the_audience_report_is_read_over_every_page(platform):
    work = make_batches(12, size=10, audiences=("aud_1", "aud_2", "aud_3"))
    with HttpDestinationEmulator(emulating(report_page_size=1)) as emulator:
        destination = connector(emulator.url, platform)
        destination.open()
        for batch in work:
            destination.send(batch)
        reported = destination.audience_reports("1234567890", headers={"developer-token": "dev"})
        destination.close()
    expected = emulator.matched_sizes()
    assert sorted(entry.audience for entry in reported) == sorted(AUDIENCE_IDS.values())
    assert emulator.score.report_pages >= 3
    for entry in reported:
        members, matched = expected[entry.audience]
        assert 0 < members and entry.size <= matched + 1 and entry.size >= int(matched * 0.9)


def test_plain_http_to_a_remote_host_is_refused():
    with pytest.raises(InsecureEndpoint):
        HttpApiDestination("http://ads.example.com", MetaCustomAudiences(), token="t")
    HttpApiDestination("https://graph.facebook.com", MetaCustomAudiences(), token="t")
