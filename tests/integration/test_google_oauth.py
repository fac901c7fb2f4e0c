"""Google OAuth 2.0 through google-auth: a delivery outlives its access tokens and loses nothing.

The emulator is also the service account key's `token_uri`: it verifies the JWT assertion
google-auth signs (with google-auth's own verifier, against the key's public half) and issues
tokens that live a second or two; Data Manager calls need a live one. google-auth renews a token
3 min 45 s before it expires; the margin is scaled down with the lifetimes here.
"""
import datetime
import hashlib
import json
import random

import google.auth._helpers
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from audience_relay.connectors.delivery import deliver_batches
from audience_relay.connectors.destination import Batch
from audience_relay.connectors.destinations.google.client import GoogleDataManager
from audience_relay.connectors.destinations.google.oauth import google_access_token
from audience_relay.connectors.http.client import HttpApiDestination
from audience_relay.connectors.rate_limit import TokenBucket
from audience_relay.connectors.retry import RetryPolicy
from audience_relay.connectors.state.sqlite import SqliteStateStore
from audience_relay.connectors.state.store import BatchRecord, BatchState
from audience_relay.testing.emulators.http_destination import EmulatorConfig, HttpDestinationEmulator

pytestmark = pytest.mark.integration
POLICY = RetryPolicy(base_seconds=0.05, cap_seconds=0.5, max_attempts=4)


def _key_pair() -> tuple[str, str]:
    """(private PEM, public PEM) of a fresh RSA key, as a service account key holds."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def _service_account_key(private: str, token_uri: str) -> str:
    return json.dumps({"type": "service_account", "project_id": "relay-test", "private_key_id": "k1", "private_key": private,
                       "client_email": "relay@relay-test.iam.gserviceaccount.com", "client_id": "1", "token_uri": token_uri})


def _batches(count: int, size: int = 20) -> list[Batch]:
    work = []
    for number in range(count):
        members = sorted(("email", hashlib.sha256(f"{number}-{i}".encode()).hexdigest()) for i in range(size))
        work.append(Batch(BatchRecord("r1", "google_dm", "5550001", "add", number, f"{number:064x}", size), members))
    return work


def _deliver(emulator: HttpDestinationEmulator, key: str, work: list[Batch], store, rpm: int = 600):
    destination = HttpApiDestination(emulator.url, GoogleDataManager(operating_account_id="1234567890"), token=google_access_token(key))
    return deliver_batches(destination, work, store, TokenBucket.partition_share(rpm, 1), None, POLICY, random.Random(7))


@pytest.fixture
def short_margin(monkeypatch):
    monkeypatch.setattr(google.auth._helpers, "REFRESH_THRESHOLD", datetime.timedelta(seconds=0.3))


def test_a_delivery_longer_than_a_token_lives_renews_it_and_loses_nothing(tmp_path, short_margin):
    private, public = _key_pair()
    store, work = SqliteStateStore(tmp_path / "s.db"), _batches(40)
    store.register([b.record for b in work])
    with HttpDestinationEmulator(EmulatorConfig(oauth_public_key=public, token_lifetime_seconds=1.5)) as emulator:
        outcomes = _deliver(emulator, _service_account_key(private, f"{emulator.url}/token"), work, store)   # 40 at 10/s: 4 s
    assert sorted({o.state for o in outcomes}) == ["delivered"]
    assert {b.state for b in store.batches("r1")} == {BatchState.DELIVERED}
    assert len(emulator.score.accepted) == 40 and emulator.score.duplicates == 0
    assert emulator.score.tokens_issued >= 3   # the run outlived two tokens at least


def test_a_token_revoked_mid_run_is_renewed_on_the_401_and_the_batch_sent_again(tmp_path):
    private, public = _key_pair()
    store, work = SqliteStateStore(tmp_path / "s.db"), _batches(12)
    store.register([b.record for b in work])
    with HttpDestinationEmulator(EmulatorConfig(oauth_public_key=public, revoke_token_after=5)) as emulator:
        outcomes = _deliver(emulator, _service_account_key(private, f"{emulator.url}/token"), work, store)
    assert sorted({o.state for o in outcomes}) == ["delivered"] and sum(o.retries for o in outcomes) == 0
    assert emulator.score.refused["unauthenticated"] == 1 and emulator.score.tokens_issued == 2
    assert len(emulator.score.accepted) == 12 and emulator.score.duplicates == 0


def test_a_key_the_token_endpoint_refuses_fails_the_batches_for_good_naming_the_refusal(tmp_path):
    """invalid_grant (a deleted or wrong key) is not retried: the batches are dead-lettered."""
    private, _ = _key_pair()
    _, other_public = _key_pair()
    store, work = SqliteStateStore(tmp_path / "s.db"), _batches(2)
    store.register([b.record for b in work])
    with HttpDestinationEmulator(EmulatorConfig(oauth_public_key=other_public)) as emulator:
        outcomes = _deliver(emulator, _service_account_key(private, f"{emulator.url}/token"), work, store)
    assert [o.state for o in outcomes] == ["failed", "failed"]
    assert all("invalid_grant" in (o.error or "") for o in outcomes) and emulator.score.accepted == {}


def test_a_report_page_refused_for_a_revoked_token_is_asked_again_with_a_new_one():
    """Feedback reads the user lists with the same credentials; a token revoked between pages is renewed."""
    private, public = _key_pair()
    with HttpDestinationEmulator(EmulatorConfig(oauth_public_key=public)) as emulator:
        destination = HttpApiDestination(emulator.url, GoogleDataManager(operating_account_id="1234567890"),
                                         token=google_access_token(_service_account_key(private, f"{emulator.url}/token")))
        destination.open()
        assert destination.audience_reports("1234567890", headers={"developer-token": "dev"}) == []
        emulator.revoke_tokens()
        assert destination.audience_reports("1234567890", headers={"developer-token": "dev"}) == []
    assert emulator.score.refused["unauthenticated"] == 1 and emulator.score.tokens_issued == 2
