"""A destination emulator: a real HTTP server on loopback speaking the Meta and Google profiles,
and the platforms of platforms/ (TikTok, ...) through their dialects.

It enforces what the real APIs enforce (members per request, requests per minute, requests
per day) with their error shapes, injects faults at configured rates (5xx, 429 bursts,
stalls past the client's timeout, dropped connections) and keeps score: every request's
time, the batches accepted per idempotency key (Meta: the upload session id, which the
connector derives from the batch key; Google: the content), so a batch accepted twice shows
up as a duplicate that the destination de-duplicated, and the members each audience holds.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, parse_qsl, urlparse

from audience_relay.testing.emulators.platforms import DIALECTS
from audience_relay.testing.emulators.platforms.dialect import Answer, Delivery


@dataclass
class EmulatorConfig:
    max_batch: int = 10_000
    requests_per_minute: int | None = None
    requests_per_day: int | None = None
    fault_rates: dict[str, float] = field(default_factory=dict)  # "5xx", "429", "stall", "drop"
    stall_seconds: float = 3.0
    fault_retry_after: float = 1.0  # the Retry-After of an injected 429
    burst_429: int = 1  # an injected 429 also refuses the next `burst_429 - 1` requests, as a throttled API does
    seed: int = 0
    # False counts members without keeping them (a 10M-id benchmark would hold gigabytes).
    keep_members: bool = True
    # Called with the number of batches accepted so far, after accepting one and before
    # answering: a test can kill the client while its request is in flight.
    on_accept: Callable[[int], None] | None = None
    # Refuse every request as invalid (400, not retryable) with an error that quotes entries of
    # the request, as the real APIs do: Meta's `invalid_entry_samples` and message, Google's
    # field violation. What a client stores of such an error must not hold them raw.
    refuse_echoing: bool = False
    # The share of an audience's members the platform matches to its users: what its reports
    # (audience size, match rate) say, deterministic per member.
    match_rate: float = 0.8
    report_page_size: int = 25   # audiences per report page (Meta's `limit`, Google's fixed page)
    report_failures: int = 0     # the first report requests answered as a transient server error
    # Google OAuth 2.0: with a service account's public key (PEM), the emulator is also the
    # key's `token_uri` (`POST /token`, the JWT assertion verified by google-auth against the
    # key) and Data Manager calls need a live token it issued; tokens live this long, and the
    # token of the `revoke_token_after`-th accepted batch is revoked (a 401 for the next call).
    oauth_public_key: str | None = None
    token_lifetime_seconds: float = 3600.0
    # OAuth 2.0 refresh-token grants (Snapchat, LinkedIn, Pinterest): with (client_id,
    # client_secret, refresh_token), the emulator is also the token endpoint (`POST
    # /oauth2/token`) and those platforms' calls need a live bearer token it issued.
    oauth2_client: tuple[str, str, str] | None = None
    # OAuth 1.0a (X): with (consumer_key, consumer_secret, access_token, access_token_secret),
    # every X request's signature is verified (by oauthlib); without, only its presence.
    oauth1_keys: tuple[str, str, str, str] | None = None
    revoke_token_after: int | None = None


@dataclass
class Scoreboard:
    request_times: list[float] = field(default_factory=list)
    accepted: Counter = field(default_factory=Counter)  # idempotency key -> times accepted
    members: dict[tuple[str, str], set] = field(default_factory=lambda: defaultdict(set))  # (audience, op) -> keys
    member_count: Counter = field(default_factory=Counter)  # (audience, op) -> members in accepted requests
    # What each audience holds now: adds and removes applied in the order they were accepted.
    held: dict[str, set] = field(default_factory=lambda: defaultdict(set))
    refused: Counter = field(default_factory=Counter)  # reason -> count
    report_pages: int = 0  # audience report pages served
    audiences_created: int = 0  # through the platform's create call
    tokens_issued: int = 0
    # Google: the consent each member was last ingested with, (audience, member) -> (adUserData,
    # adPersonalization), the member's own `consent` or else the request's; None where neither says.
    consent: dict[tuple[str, tuple[str, str]], tuple[str | None, str | None]] = field(default_factory=dict)

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.accepted.values() if n > 1)

    def max_requests_in(self, window_seconds: float) -> int:
        times = sorted(self.request_times)
        best, start = 0, 0
        for end, moment in enumerate(times):
            while moment - times[start] >= window_seconds:
                start += 1
            best = max(best, end - start + 1)
        return best


def _meta_members(body: dict) -> list[tuple[str, str]]:
    payload = body["payload"]
    types = {"EMAIL": "email", "PHONE": "phone", "MADID": "maid", "EXTERN_ID": "external_id"}
    return [(types[payload["schema"][i]], value) for row in payload["data"] for i, value in enumerate(row) if value]


def _google_members(body: dict) -> list[tuple[str, str]]:
    members = []
    for member in body["audienceMembers"]:
        if "mobileData" in member:
            members.extend(("maid", m) for m in member["mobileData"]["mobileIds"])
        for identifier in member.get("userData", {}).get("userIdentifiers", []):
            for field_name, id_type in (("emailAddress", "email"), ("phoneNumber", "phone")):
                if field_name in identifier:
                    members.append((id_type, identifier[field_name]))
    return members


CONSENT_STATUSES = ("CONSENT_GRANTED", "CONSENT_DENIED", "CONSENT_STATUS_UNSPECIFIED")


def _google_consent(body: dict) -> dict[tuple[str, str], tuple[str | None, str | None]] | str:
    """Each ingested member's consent, or the error message for a value the API would refuse."""
    request = body.get("consent") or {}
    given = {}
    for index, member in enumerate(body["audienceMembers"]):
        consent = {**request, **(member.get("consent") or {})}
        for name, value in consent.items():
            if name not in ("adUserData", "adPersonalization") or value not in CONSENT_STATUSES:
                return f"Invalid value at 'audience_members[{index}].consent.{name}' ({value})"
        for identifier in _google_members({"audienceMembers": [member]}):
            given[identifier] = (consent.get("adUserData"), consent.get("adPersonalization"))
    return given


def _echoing_error(google: bool, members: list[tuple[str, str]]) -> dict:
    """A 400 that quotes the request's entries (clear MAIDs first: what a real API would echo raw)."""
    samples = sorted(members, key=lambda m: m[0] != "maid")[:5]
    first_type, first = samples[0] if samples else ("email", "")
    if google:
        return {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                          "message": f"Invalid value at 'audience_members[0]' ({first_type}): \"{first}\"",
                          "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                                       "fieldViolations": [{"field": f"audience_members[{i}]", "description": f"invalid {t}: {v}"}
                                                           for i, (t, v) in enumerate(samples)]}]}}
    return {"error": {"code": 100, "type": "OAuthException", "error_subcode": 1870053,
                      "message": f"(#100) Invalid entries in payload, for example {first.upper()}",
                      "error_user_msg": f"The entry {first} is not valid",
                      "error_data": {"num_invalid_entries": len(members),
                                     "invalid_entry_samples": {v: f"invalid {t}" for t, v in samples}}}}


class HttpDestinationEmulator:
    def __init__(self, config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config or EmulatorConfig()
        self.score = Scoreboard()
        self.day = 0  # tests move the emulator's day forward to reset the daily quota
        self._per_day: Counter = Counter()
        self._recent: list[float] = []
        self._burst_left = 0
        self._rng = random.Random(self.config.seed)
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}   # OAuth access token -> when it expires (monotonic)
        self.audiences: dict[str, str] = {}   # the platform's id -> name, of audiences created through its API
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HttpDestinationEmulator:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def next_day(self) -> None:
        with self._lock:
            self.day += 1

    def _admit(self) -> tuple[str | None, float]:
        """Record the request; say which limit or fault it hits, if any, and a Retry-After."""
        with self._lock:
            now = time.monotonic()
            self.score.request_times.append(now)
            fault = None
            if self._burst_left:
                self._burst_left -= 1
                fault = "429"
            else:
                roll = self._rng.random()
                for name, rate in sorted(self.config.fault_rates.items()):
                    if roll < rate:
                        fault = name
                        break
                    roll -= rate
                if fault == "429":
                    self._burst_left = self.config.burst_429 - 1
            if fault:
                self.score.refused[fault] += 1
                return fault, self.config.fault_retry_after
            if self.config.requests_per_minute:
                self._recent = [t for t in self._recent if now - t < 60]
                if len(self._recent) >= self.config.requests_per_minute:
                    self.score.refused["rate_limit"] += 1
                    return "rate_limit", max(0.0, 60 - (now - self._recent[0]))
                self._recent.append(now)
            if self.config.requests_per_day:
                if self._per_day[self.day] >= self.config.requests_per_day:
                    self.score.refused["daily_quota"] += 1
                    return "daily_quota", 0.0
                self._per_day[self.day] += 1
            return None, 0.0

    def _accept(self, key: str | None, audience: str, op: str, members: list[tuple[str, str]]) -> int:
        """Record an accepted batch; returns how many batches were accepted so far."""
        key = key or hashlib.sha256(json.dumps([audience, op, sorted(members)]).encode()).hexdigest()
        with self._lock:
            self.score.accepted[key] += 1
            self.score.member_count[(audience, op)] += len(members)
            if self.config.keep_members:
                self.score.members[(audience, op)].update(members)
                if op == "add":
                    self.score.held[audience].update(members)
                else:
                    self.score.held[audience].difference_update(members)
            accepted = sum(self.score.accepted.values())
        if self.config.on_accept:
            self.config.on_accept(accepted)
        return accepted

    def revoke_tokens(self) -> None:
        """Every OAuth token issued so far stops working (a key rotated, a token revoked)."""
        with self._lock:
            self._tokens.clear()

    def matched_sizes(self) -> dict[str, tuple[int, int]]:
        """audience -> (members now, members the platform matched): adds minus removes, and of
        those the ones whose hash falls under the match rate."""
        with self._lock:
            audiences = sorted({audience for audience, _ in self.score.members})
            held = {a: self.score.members[(a, "add")] - self.score.members[(a, "remove")] for a in audiences}
        cut = int(self.config.match_rate * 2**16)
        return {a: (len(keys), sum(1 for key in keys if int(hashlib.sha256(repr(key).encode()).hexdigest()[:4], 16) < cut))
                for a, keys in held.items()}

    def create_audience(self, name: str) -> str:
        """A new audience named `name` (names need not be unique, as on TikTok); its numeric id."""
        with self._lock:
            self.score.audiences_created += 1
            platform_id = str(9_000_000 + len(self.audiences) + 1)
            self.audiences[platform_id] = name
        return platform_id

    def _report_rows(self, start: int, size: int) -> tuple[list[tuple[str, int, int]], int]:
        """One page of (audience, members, matched) from `start`, and how many audiences there
        are: those holding members, and those created empty."""
        with self._lock:
            self.score.report_pages += 1
        sizes = {platform_id: (0, 0) for platform_id in self.audiences} | self.matched_sizes()
        rows = [(audience, *counts) for audience, counts in sorted(sizes.items())]
        return rows[start:start + size], len(rows)

    def _report_page(self, token: str | None, size: int) -> tuple[list[tuple[str, int, int]], str | None]:
        """One page of (audience, members, matched), and the token of the next page (None: last)."""
        start = int(token) if token else 0
        rows, total = self._report_rows(start, size)
        return rows, str(start + size) if start + size < total else None

    def _handler(self):
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _reply(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict:
                """A JSON body (Google), or Graph's form fields with their JSON values decoded (Meta)."""
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
                    return json.loads(raw or b"{}")
                fields = dict(parse_qsl(raw.decode()))
                return {name: json.loads(value) if name in ("payload", "session") else value for name, value in fields.items()}

            def _dialect(self):
                """The platform of platforms/ whose request this is, and which (deliver or report)."""
                for dialect in DIALECTS:
                    route = dialect.route(self.command, self.path)
                    if route:
                        return dialect, route
                return None, None

            def _send(self, answer: Answer) -> None:
                self._reply(answer.status, answer.body, answer.headers)

            def _speak(self, dialect, route: str) -> None:
                """A platform's request: its credential, then a report page or a delivery under the
                emulator's limits and faults, answered the platform's way."""
                body = self._body()
                refusal = dialect.authenticated(self.headers, self.command, f"{emulator.url}{self.path}", emulator.config) or self._bearer_refused(dialect)
                if refusal:
                    with emulator._lock:
                        emulator.score.refused["unauthenticated"] += 1
                    return self._send(refusal)
                if route == "report":
                    if self._report_failing():
                        return self._send(dialect.unavailable())
                    report = dialect.report(self.path, body, emulator.config.report_page_size)
                    return self._send(dialect.report_page(report, *emulator._report_rows(report.start, report.size), emulator.audiences))
                if route == "create":
                    name = dialect.create(body, self.path)
                    return self._send(name if isinstance(name, Answer) else dialect.created(emulator.create_audience(name)))
                delivery = dialect.delivery(self.command, self.path, body)
                if isinstance(delivery, Answer):
                    with emulator._lock:
                        emulator.score.refused["invalid"] += 1
                    return self._send(delivery)
                problem, retry_after = emulator._admit()
                if self._lost(problem, delivery):
                    return
                if problem == "5xx":
                    return self._send(dialect.unavailable())
                if problem in ("429", "rate_limit", "daily_quota"):
                    return self._send(dialect.throttled(problem, retry_after))
                if emulator.config.refuse_echoing:
                    return self._refuse("invalid", dialect.echoing(delivery.members))
                if len(delivery.members) > min(emulator.config.max_batch, dialect.max_batch):
                    return self._refuse("oversize", dialect.oversize())
                reason = dialect.malformed(delivery.members)
                if reason:
                    return self._refuse("malformed", dialect.invalid(reason))
                emulator._accept(delivery.key, delivery.audience, delivery.op, delivery.members)
                return self._send(dialect.accepted(delivery))

            def _refuse(self, reason: str, answer: Answer) -> None:
                with emulator._lock:
                    emulator.score.refused[reason] += 1
                self._send(answer)

            def _lost(self, problem: str | None, delivery: Delivery) -> bool:
                """An injected drop (the connection dies mid-request) or stall (processed, but the
                answer comes too late); True when the request was lost one of those ways."""
                if problem == "drop":
                    self.connection.shutdown(2)
                    self.close_connection = True
                    return True
                if problem == "stall":
                    emulator._accept(delivery.key, delivery.audience, delivery.op, delivery.members)
                    time.sleep(emulator.config.stall_seconds)
                    self.close_connection = True
                    return True
                return False

            def do_POST(self) -> None:
                dialect, route = self._dialect()
                if dialect:
                    return self._speak(dialect, route)
                if self.path.rstrip("/").endswith("/googleAds:search"):
                    return self._google_report()
                if self.path == "/token" and emulator.config.oauth_public_key:
                    return self._issue_token()
                if self.path == "/oauth2/token" and emulator.config.oauth2_client:
                    return self._refresh_grant()
                self._handle("POST")

            def _refresh_grant(self) -> None:
                """OAuth 2.0 refresh-token grant (RFC 6749 section 6); the client's credentials in the
                form body or as HTTP Basic authentication, as the platform's endpoint takes them."""
                import base64

                fields = dict(parse_qsl(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()))
                client_id, client_secret, refresh_token = emulator.config.oauth2_client
                basic = self.headers.get("Authorization", "")
                if basic.startswith("Basic "):
                    fields.update(zip(("client_id", "client_secret"), base64.b64decode(basic[6:]).decode().split(":", 1)))
                if (fields.get("client_id"), fields.get("client_secret")) != (client_id, client_secret):
                    return self._reply(401, {"error": "invalid_client"})
                if fields.get("grant_type") != "refresh_token" or fields.get("refresh_token") != refresh_token:
                    return self._reply(400, {"error": "invalid_grant"})
                with emulator._lock:
                    emulator.score.tokens_issued += 1
                    token = f"emulated-access-{emulator.score.tokens_issued}"
                    emulator._tokens[token] = time.monotonic() + emulator.config.token_lifetime_seconds
                return self._reply(200, {"access_token": token, "token_type": "Bearer", "expires_in": emulator.config.token_lifetime_seconds})

            def _bearer_refused(self, dialect) -> Answer | None:
                """With refresh-token grants on, a platform that takes bearer tokens refuses any it did not issue, or expired."""
                if not (emulator.config.oauth2_client and getattr(dialect, "bearer_tokens", False)):
                    return None
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                with emulator._lock:
                    live = emulator._tokens.get(token, 0) > time.monotonic()
                return None if live else dialect.unauthorized()

            def _issue_token(self) -> None:
                """OAuth 2.0 JWT-bearer grant (RFC 7523), as Google's token endpoint answers it."""
                from google.auth import jwt

                fields = dict(parse_qsl(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()))
                try:
                    # google-auth addresses the assertion to Google's token endpoint, whatever `token_uri` says.
                    claims = jwt.decode(fields.get("assertion", ""), certs=emulator.config.oauth_public_key,
                                        audience="https://oauth2.googleapis.com/token")
                except ValueError as error:
                    return self._reply(400, {"error": "invalid_grant", "error_description": str(error)[:100]})
                if fields.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" or "datamanager" not in claims.get("scope", ""):
                    return self._reply(400, {"error": "invalid_request"})
                with emulator._lock:
                    emulator.score.tokens_issued += 1
                    token = f"ya29.emulated-{emulator.score.tokens_issued}"
                    emulator._tokens[token] = time.monotonic() + emulator.config.token_lifetime_seconds
                return self._reply(200, {"access_token": token, "expires_in": emulator.config.token_lifetime_seconds, "token_type": "Bearer"})

            def _google_unauthenticated(self) -> bool:
                """With OAuth on: a missing, unknown, expired or revoked token is a 401."""
                if not emulator.config.oauth_public_key:
                    return False
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                with emulator._lock:
                    live = emulator._tokens.get(token, 0) > time.monotonic()
                    if not live:
                        emulator.score.refused["unauthenticated"] += 1
                if not live:
                    self._reply(401, {"error": {"code": 401, "status": "UNAUTHENTICATED",
                                                "message": "Request had invalid authentication credentials."}})
                return not live

            def do_GET(self) -> None:
                dialect, route = self._dialect()
                if dialect:
                    return self._speak(dialect, route)
                if "/customaudiences" in self.path:
                    return self._meta_report()
                self._reply(404, {"error": {"code": 803, "message": f"unknown path {self.path}"}})

            def _report_failing(self) -> bool:
                """The first `report_failures` report requests fail (counted as refused "report")."""
                with emulator._lock:
                    failing = emulator.config.report_failures > emulator.score.refused["report"]
                    if failing:
                        emulator.score.refused["report"] += 1
                return failing

            def _report_fails(self, google: bool) -> bool:
                failing = self._report_failing()
                if failing:
                    error = {"code": 503, "status": "UNAVAILABLE", "message": "backend unavailable"} if google else {
                        "code": 2, "is_transient": True, "message": "Service temporarily unavailable"}
                    self._reply(503 if google else 500, {"error": error})
                return failing

            def _meta_report(self) -> None:
                """`GET /act_<account>/customaudiences?fields=...&limit=N&after=CURSOR` (Graph API cursor paging)."""
                if self._report_fails(google=False):
                    return
                query = parse_qs(urlparse(self.path).query)
                limit = min(int(query.get("limit", ["25"])[0]), emulator.config.report_page_size)   # a page holds at most this
                page, after = emulator._report_page(query.get("after", [None])[0], limit)
                data = [{"id": audience, "approximate_count_lower_bound": int(matched * 0.9),
                         "approximate_count_upper_bound": math.ceil(matched * 1.1),
                         "operation_status": {"code": 200, "description": "Normal"}} for audience, _, matched in page]
                paging = {"cursors": {"before": "0", "after": after or ""}}
                if after:
                    paging["next"] = f"{emulator.url}{urlparse(self.path).path}?limit={limit}&after={after}"
                return self._reply(200, {"data": data, "paging": paging})

            def _google_report(self) -> None:
                """`POST /v*/customers/<id>/googleAds:search` over user_list, `nextPageToken` paging."""
                body = self._body()
                if self._google_unauthenticated():
                    return
                if not self.headers.get("developer-token"):
                    return self._reply(401, {"error": {"code": 401, "status": "UNAUTHENTICATED", "message": "developer-token missing"}})
                if self._report_fails(google=True):
                    return
                customer = self.path.strip("/").split("/")[-2]
                page, token = emulator._report_page(body.get("pageToken") or None, emulator.config.report_page_size)
                results = [{"userList": {"resourceName": f"customers/{customer}/userLists/{audience}", "id": audience,
                                         "sizeForSearch": str(matched),
                                         "matchRatePercentage": round(100 * matched / members) if members else 0}}
                           for audience, members, matched in page]
                return self._reply(200, {"results": results, **({"nextPageToken": token} if token else {})})

            def do_DELETE(self) -> None:
                dialect, route = self._dialect()
                if dialect:
                    return self._speak(dialect, route)
                self._handle("DELETE")

            def do_PATCH(self) -> None:
                dialect, route = self._dialect()
                if dialect:
                    return self._speak(dialect, route)
                self._reply(404, {"error": f"unknown path {self.path}"})

            def _handle(self, method: str) -> None:
                body = self._body()
                google = self.path.startswith("/v1/audienceMembers:")
                if google:
                    if self._google_unauthenticated():
                        return
                    members = _google_members(body)
                    audience = body["destinations"][0]["productDestinationId"]
                    op = "add" if self.path.endswith(":ingest") else "remove"
                else:
                    if not body.get("access_token"):   # Graph takes it as a parameter, as the SDK sends it
                        return self._reply(400, {"error": {"code": 190, "type": "OAuthException",
                                                           "message": "An active access token must be used"}})
                    members = _meta_members(body)
                    audience = self.path.strip("/").split("/")[-2]  # [/version]/{audience}/users
                    op = "add" if method == "POST" else "remove"
                session = body.get("session", {}).get("session_id")
                key = f"session:{session}" if session is not None else None
                problem, retry_after = emulator._admit()
                if self._lost(problem, Delivery(audience, op, members, key)):
                    return
                if problem == "5xx":
                    error = {"code": 503, "status": "UNAVAILABLE", "message": "backend unavailable"} if google else {
                        "code": 2, "is_transient": True, "message": "Service temporarily unavailable"}
                    return self._reply(503 if google else 500, {"error": error})
                if problem in ("429", "rate_limit", "daily_quota"):
                    return self._throttle(google, problem, retry_after)
                if emulator.config.refuse_echoing:
                    emulator.score.refused["invalid"] += 1
                    return self._reply(400, _echoing_error(google, members))
                if len(members) > emulator.config.max_batch:
                    emulator.score.refused["oversize"] += 1
                    reason = {"code": 400, "status": "INVALID_ARGUMENT", "message": "TOO_MANY_AUDIENCE_MEMBERS"} if google else {
                        "code": 100, "message": "Too many records in payload"}
                    return self._reply(400, {"error": reason})
                consent = _google_consent(body) if google and op == "add" else {}
                if isinstance(consent, str):
                    emulator.score.refused["invalid_consent"] += 1
                    return self._reply(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": consent}})
                accepted = emulator._accept(key, audience, op, members)
                if consent and emulator.config.keep_members:
                    with emulator._lock:
                        emulator.score.consent.update({(audience, member): given for member, given in consent.items()})
                if google:
                    if emulator.config.revoke_token_after and accepted == emulator.config.revoke_token_after:
                        with emulator._lock:
                            emulator._tokens.pop(self.headers.get("Authorization", "").removeprefix("Bearer "), None)
                    return self._reply(200, {"requestId": hashlib.md5(json.dumps(body).encode()).hexdigest()})
                return self._reply(200, {"audience_id": audience, "session_id": body.get("session", {}).get("session_id"),
                                         "num_received": len(members), "num_invalid_entries": 0, "invalid_entry_samples": {}})

            def _throttle(self, google: bool, problem: str, retry_after: float) -> None:
                if google:
                    limit = "IngestionMutateRequestsPerDayPerProject" if problem == "daily_quota" else "IngestionMutateRequestsPerMinutePerProject"
                    error = {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded",
                             "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED",
                                          "metadata": {"quota_limit": limit}}]}
                    headers = {"Retry-After": f"{retry_after:.2f}"} if problem != "daily_quota" else {}
                    return self._reply(429, {"error": error}, headers)
                usage = {"act_1": [{"type": "custom_audience", "call_count": 100, "total_cputime": 10, "total_time": 10,
                                    "estimated_time_to_regain_access": 0}]}
                error = {"code": 17, "error_subcode": 2446079, "message": "User request limit reached", "type": "OAuthException"}
                return self._reply(400, {"error": error}, {"X-Business-Use-Case-Usage": json.dumps(usage), "Retry-After": f"{retry_after:.2f}"})

        return Handler


if __name__ == "__main__":
    # The Docker Compose `emulator` service: `python -m testing.emulators.http_destination HOST PORT`.
    import sys

    with HttpDestinationEmulator(host=sys.argv[1], port=int(sys.argv[2])) as served:
        print(f"destination emulator on {sys.argv[1]}:{sys.argv[2]}", flush=True)
        threading.Event().wait()
