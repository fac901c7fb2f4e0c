"""Meta Marketing API, Customer File Custom Audiences (`/{audience_id}/users`).

Adds are `POST`, removes `DELETE`, both with a multi-key `payload` (`schema`, `is_raw`, `data`
rows in schema order, blanks for keys a row lacks) and the `session`, JSON-encoded form fields
as Meta's Business SDK sends them, with `access_token` and, when the app requires it,
`appsecret_proof`. Unlike the SDK, a DELETE carries them in the body, not the query string
(10,000 rows do not fit in a URL), and the token never travels in a URL (connection errors
quote URLs). Every batch is its own upload session whose id
is derived from the batch key, so a resent batch carries the same session id. Throttling is an
error code (4, 17, 613, 80003, 80004) with the time to regain access in the
`X-Business-Use-Case-Usage` header, in minutes.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qs, urlencode, urlparse

from audience_relay.connectors.destination import Batch, Receipt
from audience_relay.connectors.http.client import HttpError, HttpRequest, ReportedAudience, bearer, retry_after_seconds
from audience_relay.connectors.retry import Failure, FailureKind

SCHEMA_KEYS = {"email": "EMAIL", "phone": "PHONE", "maid": "MADID", "external_id": "EXTERN_ID"}
THROTTLING_CODES = {4, 17, 613, 80003, 80004}
REPORT_FIELDS = "id,approximate_count_lower_bound,approximate_count_upper_bound,operation_status"
REPORT_PAGE_SIZE = 100
TRANSIENT_CODES = {1, 2}


def _encoded(value: dict) -> str:
    """A form field's JSON as the SDK encodes it: sorted keys, compact separators."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def session_id(batch: Batch) -> int:
    """A positive 63-bit id, the same for every send of the same batch."""
    return int(batch.record.idempotency_key[:15], 16) + 1


def _regain_access_seconds(headers: dict[str, str]) -> float | None:
    raw = headers.get("X-Business-Use-Case-Usage") or headers.get("x-business-use-case-usage")
    if not raw:
        return None
    try:
        usage = json.loads(raw)
        minutes = max(entry.get("estimated_time_to_regain_access", 0) for entries in usage.values() for entry in entries)
    except (ValueError, AttributeError, TypeError):
        return None
    return float(minutes) * 60 if minutes else None


@dataclass(frozen=True)
class MetaCustomAudiences:
    """Requests are relative to the versioned Graph API root (`https://graph.facebook.com/v26.0`)."""

    name: str = "meta_custom_audiences"
    app_secret: str | None = field(default=None, repr=False)   # set when the app requires appsecret_proof

    def build(self, batch: Batch, audience: str) -> HttpRequest:
        types = sorted({id_type for id_type, _ in batch.members}, key=list(SCHEMA_KEYS).index)
        schema = [SCHEMA_KEYS[t] for t in types]
        data = [[key if id_type == t else "" for t in types] for id_type, key in batch.members]
        # `is_raw`: rows of several keys, each hashed (MADIDs and external ids as they are).
        payload = {"schema": schema, "is_raw": True, "data": data}
        session = {"session_id": session_id(batch), "batch_seq": 1, "last_batch_flag": True, "estimated_num_total": len(batch.members)}
        method = "POST" if batch.record.op == "add" else "DELETE"
        return HttpRequest(method, f"/{audience}/users", None, {}, form={"payload": _encoded(payload), "session": _encoded(session)})

    def authorize(self, request: HttpRequest, token: str) -> HttpRequest:
        """`access_token` (and `appsecret_proof`) with a write's form fields; a report page (GET)
        takes the token as a bearer header and the proof as a parameter."""
        proof = {"appsecret_proof": hmac.new(self.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()} if self.app_secret else {}
        if request.form is not None:
            return replace(request, form={**request.form, "access_token": token, **proof})
        path = f"{request.path}{'&' if '?' in request.path else '?'}{urlencode(proof)}" if proof else request.path
        return bearer(replace(request, path=path), token)

    def classify(self, error: HttpError) -> Failure:
        details = error.body.get("error") if isinstance(error.body, dict) else None
        details = details if isinstance(details, dict) else {}
        code = details.get("code")
        message = f"HTTP {error.status} code {code}: {details.get('message', '')}"[:500]
        if code in THROTTLING_CODES or error.status == 429:
            wait = _regain_access_seconds(error.headers) or retry_after_seconds(error.headers)
            return Failure(FailureKind.RATE_LIMITED, message, wait)
        if error.status >= 500 or code in TRANSIENT_CODES or details.get("is_transient"):
            return Failure(FailureKind.RETRYABLE, message)
        return Failure(FailureKind.PERMANENT, message)

    def refused(self, body: dict) -> bool:
        return False   # Graph answers every error with a 4xx or 5xx

    def receipt(self, body: dict, batch: Batch) -> Receipt:
        return Receipt(int(body.get("num_received", len(batch.members))), f"invalid={body.get('num_invalid_entries', 0)}")

    def report_request(self, account_id: str, page_token: str | None) -> HttpRequest:
        """A page of the ad account's custom audiences with Meta's size estimate (cursor paging)."""
        query = {"fields": REPORT_FIELDS, "limit": REPORT_PAGE_SIZE, **({"after": page_token} if page_token else {})}
        return HttpRequest("GET", f"/act_{account_id.removeprefix('act_')}/customaudiences?{urlencode(query)}", None, {})

    def read_report(self, body: dict) -> tuple[list[ReportedAudience], str | None]:
        """Meta gives no match rate, only a range of matched people: the lower bound is the size."""
        audiences = [ReportedAudience(str(entry["id"]), int(entry.get("approximate_count_lower_bound") or 0), None,
                                      str((entry.get("operation_status") or {}).get("description", "")))
                     for entry in body.get("data", [])]
        following = (body.get("paging") or {}).get("next")
        return audiences, parse_qs(urlparse(following).query).get("after", [None])[0] if following else None
