"""LinkedIn Marketing API (Rest.li 2.0, a versioned `LinkedIn-Version` header), DMP segment users.

Adds and removes are one `BATCH_CREATE` to `/rest/dmpSegments/{id}/users`, an element per
member with `action` ADD or REMOVE and its `userIds` (SHA256_EMAIL, GOOGLE_AID). The token is an
OAuth 2.0 bearer token (a refresh token's). LinkedIn answers a batch 200 with a `status` per
element: any element refused refuses the batch. Throttling is a 429 with no header (the backoff
applies); errors carry `{message, serviceErrorCode, status}`. Segments are found per sponsored
account (`q=account`, paged by `start`/`count`) and created with the integration's
`sourcePlatform`; the new id comes in the `x-restli-id` header.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import quote, urlencode

from audience_relay.connectors.destination import Batch, Receipt
from audience_relay.connectors.http.client import HttpError, HttpRequest, ReportedAudience, bearer, failure_by_status
from audience_relay.connectors.retry import Failure

LINKEDIN_VERSION = "202604"
ID_TYPES = {"email": "SHA256_EMAIL", "maid": "GOOGLE_AID"}
PAGE_SIZE = 100


def _account(account_id: str) -> str:
    return f"urn:li:sponsoredAccount:{account_id}"


@dataclass(frozen=True)
class LinkedInDmpSegments:
    """Requests are relative to the API root (`https://api.linkedin.com`)."""

    name: str = "linkedin_dmp_segments"
    source_platform: str | None = None

    def build(self, batch: Batch, audience: str) -> HttpRequest:
        action = "ADD" if batch.record.op == "add" else "REMOVE"
        elements = [{"action": action, "userIds": [{"idType": ID_TYPES[id_type], "idValue": key}]} for id_type, key in batch.members]
        return HttpRequest("POST", f"/rest/dmpSegments/{audience}/users", {"elements": elements}, {"X-RestLi-Method": "BATCH_CREATE"})

    def authorize(self, request: HttpRequest, token: str) -> HttpRequest:
        versioned = replace(request, headers={"LinkedIn-Version": LINKEDIN_VERSION, "X-Restli-Protocol-Version": "2.0.0", **request.headers})
        return bearer(versioned, token)

    def refused(self, body: dict) -> bool:
        return any(int(element.get("status", 200)) >= 400 for element in body.get("elements") or [] if isinstance(element, dict))

    def classify(self, error: HttpError) -> Failure:
        body = error.body if isinstance(error.body, dict) else {}
        statuses = [int(e.get("status", 0)) for e in body.get("elements") or [] if isinstance(e, dict) and "status" in e]
        status = max(statuses, default=error.status) if error.status < 300 else error.status
        return failure_by_status(error, f"HTTP {error.status} {body.get('serviceErrorCode', '')}: {body.get('message', '')}"[:500], status)

    def receipt(self, body: dict, batch: Batch) -> Receipt:
        return Receipt(len(batch.members), f"elements={len(body.get('elements') or [])}")

    def report_request(self, account_id: str, page_token: str | None) -> HttpRequest:
        """A page of the sponsored account's segments with their audience size."""
        query = urlencode({"q": "account", "account": _account(account_id), "start": page_token or "0", "count": PAGE_SIZE}, quote_via=quote)
        return HttpRequest("GET", f"/rest/dmpSegments?{query}", None, {})

    def read_report(self, body: dict) -> tuple[list[ReportedAudience], str | None]:
        """The LinkedIn destination's `audienceSize` (members it can target); no match rate."""
        audiences = []
        for segment in body.get("elements") or []:
            linkedin = next((d for d in segment.get("destinations") or [] if d.get("destination") == "LINKEDIN"), {})
            audiences.append(ReportedAudience(str(segment["id"]), int(linkedin.get("audienceSize") or 0), None,
                                              str(linkedin.get("status", "")), segment.get("name")))
        paging = body.get("paging") or {}
        following = int(paging.get("start", 0)) + int(paging.get("count", len(audiences)) or len(audiences))
        return audiences, str(following) if audiences and following < int(paging.get("total", 0)) else None

    def create_request(self, account_id: str, name: str) -> HttpRequest:
        segment = {"name": name, "sourcePlatform": self.source_platform, "sourceSegmentId": name, "account": _account(account_id),
                   "type": "USER", "destinations": [{"destination": "LINKEDIN"}]}
        return HttpRequest("POST", "/rest/dmpSegments", segment, {})

    def created_id(self, body: dict, headers: dict[str, str]) -> str:
        lowered = {name.lower(): value for name, value in headers.items()}
        return lowered.get("x-restli-id") or lowered["x-linkedin-id"]
