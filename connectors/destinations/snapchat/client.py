"""Snap Marketing API, Snap Audience Match segments (`/v1/segments/{segment_id}/users`).

Adds are `POST`, removes `DELETE`, both with `{"users": [{"schema": [...], "data": [[id], ...]}]}`:
one entry per id type of the batch, each row one hashed id. The token is an OAuth 2.0 bearer
token (a refresh token's, connectors/http/oauth2.py). Snap answers throttling with 429 and no
header saying how long (the backoff applies); a 200 may still refuse: `request_status` ERROR, or
a `sub_request_status` other than SUCCESS for one of the schemas. Segments are listed and
created under the ad account (`/v1/adaccounts/{id}/segments`), paged by `paging.next_link`.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlparse

from audience_relay.connectors.destination import Batch, Receipt
from audience_relay.connectors.http.client import HttpError, HttpRequest, ReportedAudience, bearer, failure_by_status
from audience_relay.connectors.retry import Failure

SCHEMAS = {"email": "EMAIL_SHA256", "phone": "PHONE_SHA256", "maid": "MOBILE_AD_ID_SHA256"}
PAGE_SIZE = 1000
RETENTION_DAYS = 9999   # Snap's "lifetime"


def _failed(body: object) -> bool:
    if not isinstance(body, dict):
        return False
    if str(body.get("request_status", "SUCCESS")).upper() != "SUCCESS":
        return True
    return any(str(entry.get("sub_request_status", "SUCCESS")).upper() != "SUCCESS" for entry in body.get("users") or body.get("segments") or [])


@dataclass(frozen=True)
class SnapchatAudienceMatch:
    """Requests are relative to the API root (`https://adsapi.snapchat.com`)."""

    name: str = "snapchat_audience_match"

    def build(self, batch: Batch, audience: str) -> HttpRequest:
        types = sorted({id_type for id_type, _ in batch.members}, key=list(SCHEMAS).index)
        users = [{"schema": [SCHEMAS[t]], "data": [[key] for id_type, key in batch.members if id_type == t]} for t in types]
        return HttpRequest("POST" if batch.record.op == "add" else "DELETE", f"/v1/segments/{audience}/users", {"users": users}, {})

    def authorize(self, request: HttpRequest, token: str) -> HttpRequest:
        return bearer(request, token)

    def refused(self, body: dict) -> bool:
        return _failed(body)

    def classify(self, error: HttpError) -> Failure:
        body = error.body if isinstance(error.body, dict) else {}
        return failure_by_status(error, f"HTTP {error.status} {body.get('error_code', '')}: "
                                        f"{body.get('debug_message') or body.get('request_status', '')}"[:500])

    def receipt(self, body: dict, batch: Batch) -> Receipt:
        uploaded = sum(int((entry.get("user") or {}).get("number_uploaded_users") or 0) for entry in body.get("users") or [])
        return Receipt(len(batch.members), f"uploaded={uploaded} request_id={body.get('request_id', '')}")

    def report_request(self, account_id: str, page_token: str | None) -> HttpRequest:
        """A page of the ad account's segments with their approximate size."""
        query = {"limit": PAGE_SIZE, **({"cursor": page_token} if page_token else {})}
        return HttpRequest("GET", f"/v1/adaccounts/{account_id}/segments?{urlencode(query)}", None, {})

    def read_report(self, body: dict) -> tuple[list[ReportedAudience], str | None]:
        """Snap gives an approximate number of matched users, no match rate."""
        segments = [entry.get("segment") or {} for entry in body.get("segments") or []]
        audiences = [ReportedAudience(str(s["id"]), int(s.get("approximate_number_users") or 0), None,
                                      str(s.get("targetable_status") or s.get("status") or ""), s.get("name"))
                     for s in segments]
        return audiences, _next_cursor(body)

    def create_request(self, account_id: str, name: str) -> HttpRequest:
        segment = {"name": name, "description": "audience-relay", "source_type": "FIRST_PARTY",
                   "retention_in_days": RETENTION_DAYS, "ad_account_id": account_id}
        return HttpRequest("POST", f"/v1/adaccounts/{account_id}/segments", {"segments": [segment]}, {})

    def created_id(self, body: dict, headers: dict[str, str]) -> str:
        return str(body["segments"][0]["segment"]["id"])


def _next_cursor(body: dict) -> str | None:
    link = (body.get("paging") or {}).get("next_link")
    return parse_qs(urlparse(link).query).get("cursor", [None])[0] if link else None
