"""One HTTP delivery engine for every API profile: a profile builds requests and reads errors.

TLS verification is always on, against requests' own CA bundle (certifi): the session does not
trust the environment, so `REQUESTS_CA_BUNDLE`/`CURL_CA_BUNDLE` (another trust store), proxy
variables and `~/.netrc` (which would replace the bearer token) change nothing. There is no
option to turn verification off. Plain `http://` is refused except to a loopback address (local
emulators), so a typo cannot send identifiers in clear over a network; redirects are not
followed. An error answer is stored (ledger, dead letters, outcomes), so whatever it echoes of
the request (APIs quote invalid entries) is redacted first.
"""
from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass, replace
from typing import Protocol
from urllib.parse import urlparse

import requests

from audience_relay.connectors.destination import Batch, Destination, Receipt
from audience_relay.connectors.retry import Failure, FailureKind


class InsecureEndpoint(ValueError):
    """An http:// URL to a non-loopback host."""


class UnsafeAudienceId(ValueError):
    """An audience id that would not be exactly one URL path segment."""


# An audience id goes into the URL path (`/{audience}/users`): one segment, never `.` or `..`.
REPORT_ATTEMPTS = 4
REPORT_BACKOFF_SECONDS = 0.5   # doubled per attempt: 1, 2, 4 s
AUDIENCE_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
REDACTED = "[redacted]"
# Shapes of identifiers, redacted from error answers on top of the batch's own ids: an API may
# quote an entry re-cased or re-formatted. Phones are not matched by shape (any long number
# would be), and never leave in clear: every profile hashes them.
_IDENTIFIER_SHAPES = re.compile(
    r"[^\s\"'<>(),;:\[\]{}]+@[^\s\"'<>(),;:\[\]{}]+"                 # anything@anything: an email, hashed or not
    r"|(?<![0-9A-Fa-f])[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}(?![0-9A-Fa-f])"  # a MAID
    r"|(?<![0-9A-Fa-f])[0-9A-Fa-f]{32,}(?![0-9A-Fa-f])"                  # a hex digest (a hashed id)
)


def redact(answer: object, sent: list[str]) -> object:
    """`answer` (parsed JSON or text) with every id of `sent` and anything shaped like an id replaced.

    Case-insensitive, in keys too (Meta's `invalid_entry_samples` maps each sample to its reason).
    """
    text = answer if isinstance(answer, str) else repr(answer)
    lowered = text.lower()
    present = sorted({key.lower() for key in sent if key and key.lower() in lowered}, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(key) for key in present), re.IGNORECASE) if present else None

    def clean(value: object) -> object:
        if isinstance(value, str):
            value = pattern.sub(REDACTED, value) if pattern else value
            return _IDENTIFIER_SHAPES.sub(REDACTED, value)
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(item) for item in value]
        return value

    return clean(answer)


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    json: dict | None
    headers: dict[str, str]
    form: dict[str, str] | None = None   # sent form-encoded instead of `json`


@dataclass(frozen=True)
class ReportedAudience:
    """What the destination itself says of one audience it holds."""

    audience: str               # the API's id of the audience
    size: int                   # people it matched (Meta: the lower bound of its estimate)
    match_rate: float | None    # matched / uploaded, where the API reports it (Google)
    status: str
    name: str | None = None     # its name there, where the report gives it (an audience deliver created is named as ours)


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

    def refused(self, body: dict) -> bool:
        """Whether a 2xx answer still refuses the request (TikTok answers errors as HTTP 200 with
        a non-zero `code`); such an answer is an HttpError like a 4xx."""

    def receipt(self, body: dict, batch: Batch) -> Receipt: ...

    def report_request(self, account_id: str, page_token: str | None) -> HttpRequest:
        """One page of the account's audience report; `page_token` None is the first page."""

    def read_report(self, body: dict) -> tuple[list[ReportedAudience], str | None]:
        """The audiences on a report page, and the next page's token (None: the last page)."""

    def authorize(self, request: HttpRequest, token: str) -> HttpRequest:
        """The request with the credentials where the platform takes them."""


class CreatesAudiences(Protocol):
    """A platform whose API creates audiences: deliver finds an audience without an id in the
    config by its name in the audience report (`ReportedAudience.name`), or creates it
    (HttpApiDestination.ensure_audience)."""

    def create_request(self, account_id: str, name: str) -> HttpRequest: ...

    def created_id(self, body: dict, headers: dict[str, str]) -> str:
        """The new audience's id from the create answer."""


class AccessToken(Protocol):
    """Where a destination's access token comes from, for tokens that expire."""

    def current(self) -> str:
        """A token valid now (renewed first if it is about to expire)."""

    def refresh(self) -> bool:
        """Take a new token now (the API refused the current one); False when it cannot be renewed."""


@dataclass(frozen=True)
class FixedToken:
    """A token that does not expire, or is renewed elsewhere."""

    value: str

    def current(self) -> str:
        return self.value

    def refresh(self) -> bool:
        return False


class TokenRefreshFailed(Exception):
    """A new access token could not be had; `retryable` when the token endpoint was unreachable or failing."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def failure_by_status(error: HttpError, message: str, status: int | None = None) -> Failure:
    """The usual reading of an HTTP status: 429 waits (its Retry-After, else the backoff), 5xx is
    retried, anything else is the request's fault. `status` where the answer's own (an element's) counts."""
    status = error.status if status is None else status
    if status == 429:
        return Failure(FailureKind.RATE_LIMITED, message, retry_after_seconds(error.headers))
    if status >= 500:
        return Failure(FailureKind.RETRYABLE, message)
    return Failure(FailureKind.PERMANENT, message)


def bearer(request: HttpRequest, token: str) -> HttpRequest:
    """OAuth 2.0 bearer authorization (RFC 6750): the token in the Authorization header."""
    return replace(request, headers={**request.headers, "Authorization": f"Bearer {token}"})


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


def _answer(response: requests.Response) -> dict:
    """The answer's JSON, or its first characters when it is not JSON (a proxy's HTML page)."""
    try:
        return response.json() if response.content else {}
    except ValueError:
        return {"raw": response.text[:500]}


class HttpApiDestination(Destination):
    def __init__(
        self, base_url: str, profile: HttpProfile, token: str | AccessToken, timeout_seconds: float = 30.0,
        audience_ids: dict[str, str] | None = None,
    ) -> None:
        require_secure(base_url)
        self.base_url, self.profile, self.timeout = base_url.rstrip("/"), profile, timeout_seconds
        self.audience_ids = audience_ids or {}  # our audience name -> the API's audience id
        self._token = FixedToken(token) if isinstance(token, str) else token
        self._session: requests.Session | None = None

    def open(self) -> None:
        self._session = requests.Session()
        self._session.verify = True
        # Without this, REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE would replace the trust store (an
        # empty value is ignored), proxy variables would reroute, and a ~/.netrc entry would
        # replace the Authorization header.
        self._session.trust_env = False

    def close(self) -> None:
        if self._session:
            self._session.close()
            self._session = None

    def send(self, batch: Batch) -> Receipt:
        audience = self.audience_ids.get(batch.record.audience_id, batch.record.audience_id)
        if not AUDIENCE_SEGMENT.fullmatch(audience):
            raise UnsafeAudienceId(f"audience id {audience!r} of {batch.record.audience_id!r} is not one URL path segment")
        response = self._send_once(batch, audience)
        if response.status_code == 401 and self._token.refresh():   # revoked or expired early: once more, with a new token
            response = self._send_once(batch, audience)
        body = _answer(response)
        if response.status_code >= 300 or self.profile.refused(body):
            raise HttpError(response.status_code, redact(body, [key for _, key in batch.members]), dict(response.headers))
        return self.profile.receipt(body, batch)

    def _send_once(self, batch: Batch, audience: str) -> requests.Response:
        return self._request(self.base_url, self.profile.build(batch, audience))

    def _request(self, base: str, unsigned: HttpRequest) -> requests.Response:
        """One request with the current token, where the profile puts it; a form or a JSON body."""
        request = self.profile.authorize(unsigned, self._token.current())
        return self._session.request(
            request.method, f"{base}{request.path}", json=None if request.form else request.json, data=request.form,
            headers=request.headers, timeout=self.timeout,
            allow_redirects=False,  # a redirect could downgrade to http:// and resend the ids in clear
        )

    def ensure_audience(self, account_id: str, name: str, max_pages: int = 1000) -> tuple[str, bool]:
        """The platform's id of the audience named `name`, found by name over every page of the
        account's audience report, else created; and whether it was created. A create is sent
        once: a create that timed out may have succeeded, so the next run lists again before creating."""
        token = None
        for _ in range(max_pages):
            found, token = self.profile.read_report(self._report_page(self.base_url, self.profile.report_request(account_id, token)))
            named = [entry.audience for entry in found if entry.name == name]
            if named:
                return named[0], False
            if token is None:
                break
        response = self._request(self.base_url, self.profile.create_request(account_id, name))
        body = _answer(response)
        if response.status_code >= 300 or self.profile.refused(body):
            raise HttpError(response.status_code, body, dict(response.headers))
        return self.profile.created_id(body, dict(response.headers)), True

    def audience_reports(self, account_id: str, report_base_url: str | None = None, headers: dict[str, str] | None = None,
                         max_pages: int = 1000) -> list[ReportedAudience]:
        """Every page of the account's audience report (the destination's own view of what it holds).

        A page the API throttles or fails transiently, or whose connection fails, is asked again
        after its wait (up to REPORT_ATTEMPTS times); anything else raises HttpError.
        """
        base = (report_base_url or self.base_url).rstrip("/")
        require_secure(base)
        found, token = [], None
        for _ in range(max_pages):
            request = self.profile.report_request(account_id, token)
            body = self._report_page(base, replace(request, headers={**request.headers, **(headers or {})}))
            audiences, token = self.profile.read_report(body)
            found.extend(audiences)
            if token is None:
                return found
        raise HttpError(0, {"error": f"more than {max_pages} report pages"}, {})

    def _report_page(self, base: str, unsigned: HttpRequest) -> dict:
        renewed = False
        for attempt in range(1, REPORT_ATTEMPTS + 1):
            try:
                response = self._request(base, unsigned)
            except (requests.ConnectionError, requests.Timeout):
                if attempt == REPORT_ATTEMPTS:
                    raise
                time.sleep(REPORT_BACKOFF_SECONDS * 2 ** attempt)
                continue
            body = _answer(response)
            if response.status_code < 300 and not self.profile.refused(body):
                return body
            if response.status_code == 401 and not renewed and self._token.refresh():   # once, with a new token
                renewed = True
                continue
            error = HttpError(response.status_code, body, dict(response.headers))
            failure = self.profile.classify(error)
            if failure.kind not in (FailureKind.RETRYABLE, FailureKind.RATE_LIMITED) or attempt == REPORT_ATTEMPTS:
                raise error
            time.sleep(max(0.0, min(failure.retry_after or REPORT_BACKOFF_SECONDS * 2 ** attempt, 60.0)))
        raise AssertionError("unreachable")

    def classify(self, error: Exception) -> Failure:
        if isinstance(error, HttpError):
            return self.profile.classify(error)
        if isinstance(error, UnsafeAudienceId):
            return Failure(FailureKind.PERMANENT, str(error))
        if isinstance(error, TokenRefreshFailed):
            return Failure(FailureKind.RETRYABLE if error.retryable else FailureKind.PERMANENT, str(error))
        if isinstance(error, requests.exceptions.SSLError):  # a ConnectionError too, but retrying cannot help
            return Failure(FailureKind.PERMANENT, f"TLS verification of {urlparse(self.base_url).hostname} failed")
        if isinstance(error, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)):
            return Failure(FailureKind.RETRYABLE, f"{type(error).__name__}: connection failed or timed out")
        # Only the type: a message could quote a header, and headers carry the token.
        return Failure(FailureKind.PERMANENT, f"unexpected {type(error).__name__}")
