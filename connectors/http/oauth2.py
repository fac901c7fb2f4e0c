"""OAuth 2.0 refresh-token grants (RFC 6749 section 6), through requests-oauthlib: the access
token of a platform whose user authorized us once (Snapchat, LinkedIn, Pinterest), taken again
before it expires or when the API refuses it (a 401).

The destination's secret is JSON: `client_id`, `client_secret`, `refresh_token`, and optionally
`token_url` (an emulator's; the platform's otherwise). The platform's token endpoint takes the
client's credentials in the form body or as HTTP Basic authentication (Pinterest).
"""
from __future__ import annotations

import time
from collections.abc import Callable

import requests
from oauthlib.oauth2 import OAuth2Error
from requests.auth import HTTPBasicAuth
from requests_oauthlib import OAuth2Session

from audience_relay.connectors.http.client import TokenRefreshFailed, require_secure
from audience_relay.connectors.secrets import json_fields

RENEW_MARGIN_SECONDS = 60   # a token this close to its expiry is renewed before a request
TOKEN_FIELDS = ("client_id", "client_secret", "refresh_token")


class RefreshTokenGrant:
    """Access tokens from a refresh token; a new one before the current expires, or when asked."""

    def __init__(self, token_url: str, client_id: str, client_secret: str, refresh_token: str, basic_auth: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        require_secure(token_url)
        self._token_url, self._client_id, self._client_secret = token_url, client_id, client_secret
        self._refresh_token, self._basic_auth, self._clock = refresh_token, basic_auth, clock
        self._token: str | None = None
        self._expires_at = 0.0

    def current(self) -> str:
        if self._token is None or self._clock() >= self._expires_at - RENEW_MARGIN_SECONDS:
            self._renew()
        return self._token

    def refresh(self) -> bool:
        self._renew()
        return True

    def _renew(self) -> None:
        session = OAuth2Session(self._client_id)
        session.trust_env = False   # as our API sessions: no proxy, CA bundle or netrc from the environment
        credentials = ({"auth": HTTPBasicAuth(self._client_id, self._client_secret)} if self._basic_auth
                       else {"client_id": self._client_id, "client_secret": self._client_secret, "include_client_id": True})
        try:
            answer = session.refresh_token(self._token_url, refresh_token=self._refresh_token, timeout=30, **credentials)
        except (requests.ConnectionError, requests.Timeout) as error:
            raise TokenRefreshFailed(f"token endpoint unreachable ({type(error).__name__})", retryable=True) from None
        except OAuth2Error as error:   # answered: the grant refused (invalid_grant: the user must authorize again)
            raise TokenRefreshFailed(f"token refresh refused: {error.error}", retryable=error.status_code is not None and error.status_code >= 500) from None
        finally:
            session.close()
        self._token = answer["access_token"]
        self._expires_at = self._clock() + float(answer.get("expires_in") or 3600)
        # A platform that rotates refresh tokens sends a new one; the old stays valid for its own
        # life (Pinterest's continuous refresh), so the next worker may still start from the secret's.
        self._refresh_token = answer.get("refresh_token") or self._refresh_token


def refresh_token_grant(secret: str, token_url: str, basic_auth: bool = False) -> RefreshTokenGrant:
    """The secret (JSON: client_id, client_secret, refresh_token[, token_url]) as a token source."""
    fields = json_fields(secret, TOKEN_FIELDS, ("token_url",))
    return RefreshTokenGrant(fields.get("token_url") or token_url, *(fields[name] for name in TOKEN_FIELDS), basic_auth=basic_auth)
