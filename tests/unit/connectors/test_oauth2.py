"""OAuth 2.0 refresh-token grants (connectors/http/oauth2.py, requests-oauthlib) against the
emulator's token endpoint: credentials in the form or as HTTP Basic, a token renewed before it
expires, a refused grant that says so and is not retried."""
import json

import pytest

from audience_relay.connectors.http.client import TokenRefreshFailed
from audience_relay.connectors.http.oauth2 import refresh_token_grant
from audience_relay.connectors.secrets import SecretUnavailable
from audience_relay.testing.emulators.http_destination import EmulatorConfig, HttpDestinationEmulator

CLIENT = ("client-id", "client-secret", "refresh-token")


def secret(url: str, refresh_token: str = "refresh-token") -> str:
    return json.dumps({"client_id": CLIENT[0], "client_secret": CLIENT[1], "refresh_token": refresh_token, "token_url": f"{url}/oauth2/token"})


@pytest.mark.parametrize("basic_auth", [False, True])
def test_a_token_is_taken_once_and_renewed_before_it_expires(basic_auth):
    clock = [0.0]
    with HttpDestinationEmulator(EmulatorConfig(oauth2_client=CLIENT, token_lifetime_seconds=120)) as emulator:
        tokens = refresh_token_grant(secret(emulator.url), "https://unused.example/token", basic_auth=basic_auth)
        tokens._clock = lambda: clock[0]
        first = tokens.current()
        assert tokens.current() == first and emulator.score.tokens_issued == 1
        clock[0] = 61.0   # within a minute of its expiry (120 s): renewed before a request
        assert tokens.current() != first and emulator.score.tokens_issued == 2
        assert tokens.refresh() and emulator.score.tokens_issued == 3   # asked (a 401): a new one


def test_a_refused_grant_fails_for_good_and_an_unreachable_endpoint_is_retried():
    with HttpDestinationEmulator(EmulatorConfig(oauth2_client=CLIENT)) as emulator:
        with pytest.raises(TokenRefreshFailed, match="token refresh refused: invalid_grant") as refused:
            refresh_token_grant(secret(emulator.url, refresh_token="revoked"), "").current()
        assert not refused.value.retryable
        url = emulator.url
    with pytest.raises(TokenRefreshFailed, match="token endpoint unreachable") as unreachable:
        refresh_token_grant(secret(url), "").current()
    assert unreachable.value.retryable


def test_a_secret_without_the_three_values_is_named():
    with pytest.raises(SecretUnavailable, match="client_id, client_secret, refresh_token"):
        refresh_token_grant("a-plain-token", "https://accounts.example/token")
