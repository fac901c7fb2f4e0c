"""OAuth 2.0 access tokens for the Google APIs, through google-auth (no hand-written JWT code).

A Google destination's secret is a service account's JSON key: google-auth signs the JWT
assertion, trades it at the key's `token_uri` for an access token, and says when that token is
no longer valid (an hour, less its refresh margin): a new one is taken before it is. A fixed
access token (one minted elsewhere, an emulator's) is used as it is and cannot be renewed.
"""
from __future__ import annotations

import json

import google.auth.exceptions
import requests
from google.auth.transport.requests import Request
from google.oauth2 import service_account

from audience_relay.connectors.http.client import FixedToken, TokenRefreshFailed, require_secure
from audience_relay.connectors.secrets import SecretUnavailable

# The Data Manager API's scope, as its published API description lists it, and the Google Ads
# API's, which `feedback` reads the user lists' sizes from with the same credentials.
DATA_MANAGER_SCOPE = "https://www.googleapis.com/auth/datamanager"
GOOGLE_ADS_SCOPE = "https://www.googleapis.com/auth/adwords"


class ServiceAccountToken:
    """A service account's access token, renewed before it expires or when asked (a 401)."""

    def __init__(self, key: dict, scopes: tuple[str, ...] = (DATA_MANAGER_SCOPE, GOOGLE_ADS_SCOPE)) -> None:
        require_secure(key.get("token_uri", ""))
        self._credentials = service_account.Credentials.from_service_account_info(key, scopes=list(scopes))
        session = requests.Session()
        session.trust_env = False   # as our API sessions: no proxy, CA bundle or netrc from the environment
        self._request = Request(session)

    def current(self) -> str:
        if not self._credentials.valid:
            self._renew()
        return self._credentials.token

    def refresh(self) -> bool:
        self._renew()
        return True

    def _renew(self) -> None:
        try:
            self._credentials.refresh(self._request)
        except google.auth.exceptions.TransportError as error:   # the token endpoint was not reached
            raise TokenRefreshFailed(f"token endpoint unreachable ({type(error).__name__})", retryable=True) from None
        except google.auth.exceptions.RefreshError as error:   # answered: refused (invalid_grant) or failing
            raise TokenRefreshFailed(f"token refresh refused: {str(error)[:200]}", retryable=bool(getattr(error, "retryable", False))) from None


def google_access_token(secret: str) -> ServiceAccountToken | FixedToken:
    """The secret as a token source: a service account's JSON key, or a fixed access token."""
    try:
        key = json.loads(secret)
    except ValueError:
        return FixedToken(secret)
    if not isinstance(key, dict) or key.get("type") != "service_account":
        raise SecretUnavailable("a JSON Google credential must be a service account key (\"type\": \"service_account\")")
    return ServiceAccountToken(key)
