"""One HTTP delivery engine for every API profile: a profile builds requests and reads errors.

TLS verification is always on. Plain `http://` is refused except to a loopback address (local
emulators), so a typo cannot send identifiers in clear over a network.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlparse

import requests

from connectors.destination import Batch, Destination, Receipt
from connectors.retry import Failure, FailureKind


class InsecureEndpoint(ValueError):
    """An http:// URL to a non-loopback host."""


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    json: dict
    headers: dict[str, str]


class HttpError(Exception):
    """A non-2xx answer; `body` is the parsed JSON error when the API sent one."""

    def __init__(self, status: int, body: dict, headers: dict[str, str]) -> None:
        super().__init__(f"HTTP {status}: {str(body)[:500]}")
        self.status, self.body, self.headers = status, body, headers


class HttpProfile(Protocol):
    name: str

    def build(self, batch: Batch, audience: str) -> HttpRequest:
        """The request for `batch`; `audience` is the destination's own id for its audience."""

    def classify(self, error: HttpError) -> Failure: ...

    def receipt(self, body: dict, batch: Batch) -> Receipt: ...


def require_secure(base_url: str) -> None:
    parsed = urlparse(base_url)
    if parsed.scheme == "https":
        return
    host = parsed.hostname or ""
    loopback = host == "localhost" or (host.replace(".", "").isdigit() and ipaddress.ip_address(host).is_loopback)
    if parsed.scheme != "http" or not loopback:
        raise InsecureEndpoint(f"{base_url}: only https:// (or http:// to a loopback emulator) is allowed")


def retry_after_seconds(headers: dict[str, str]) -> float | None:
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP-date; the backoff applies instead


class HttpApiDestination(Destination):
    def __init__(
        self, base_url: str, profile: HttpProfile, token: str, timeout_seconds: float = 30.0, audience_ids: dict[str, str] | None = None,
    ) -> None:
        require_secure(base_url)
        self.base_url, self.profile, self.timeout = base_url.rstrip("/"), profile, timeout_seconds
        self.audience_ids = audience_ids or {}  # our audience name -> the API's audience id
        self._token = token
        self._session: requests.Session | None = None

    def open(self) -> None:
        self._session = requests.Session()
        self._session.verify = True
        self._session.headers["Authorization"] = f"Bearer {self._token}"

    def close(self) -> None:
        if self._session:
            self._session.close()
            self._session = None

    def send(self, batch: Batch) -> Receipt:
        request = self.profile.build(batch, self.audience_ids.get(batch.record.audience_id, batch.record.audience_id))
        response = self._session.request(
            request.method, f"{self.base_url}{request.path}", json=request.json, headers=request.headers, timeout=self.timeout,
            allow_redirects=False,  # a redirect could downgrade to http:// and resend the ids in clear
        )
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {"raw": response.text[:500]}
        if response.status_code >= 300:
            raise HttpError(response.status_code, body, dict(response.headers))
        return self.profile.receipt(body, batch)

    def classify(self, error: Exception) -> Failure:
        if isinstance(error, HttpError):
            return self.profile.classify(error)
        if isinstance(error, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)):
            return Failure(FailureKind.RETRYABLE, f"{type(error).__name__}: connection failed or timed out")
        # Only the type: a message could quote a header, and headers carry the token.
        return Failure(FailureKind.PERMANENT, f"unexpected {type(error).__name__}")
