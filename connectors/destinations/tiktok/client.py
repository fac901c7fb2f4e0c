"""TikTok API for Business v1.3, audience segment mapping (`/segment/mapping/`).

Adds and removes are one `POST` with `action` `add` or `delete`: `id_schema` names the columns
(EMAIL_SHA256, PHONE_SHA256) and each `batch_data` row is one member, one slot per column (`{}`
where the member has no id of that type), each id naming its audience. The token goes in the
`Access-Token` header. TikTok answers errors with HTTP 200 and a non-zero `code`: 40100, 40133
and 40016 are throttling (no header says how long; a message naming the daily limit (QPD)
defers the run to midnight UTC), 4xxxx else is the request's fault, 5xxxx and 60001 TikTok's.
An audience is created by name (`/segment/audience/`, `action: create`); names are not unique
on TikTok, so deliver looks for the name in the advertiser's list first.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import urlencode

from audience_relay.connectors.destination import Batch, Receipt
from audience_relay.connectors.http.client import HttpError, HttpRequest, ReportedAudience, retry_after_seconds
from audience_relay.connectors.retry import Failure, FailureKind

API = "/open_api/v1.3"
ID_SCHEMA = {"email": "EMAIL_SHA256", "phone": "PHONE_SHA256"}
THROTTLING_CODES = {40100, 40133, 40016}
FIRST_SERVER_CODE = 50000   # 5xxxx: TikTok's side (60001: maintenance)
REPORT_PAGE_SIZE = 100


def _error(body: object) -> tuple[object, str]:
    body = body if isinstance(body, dict) else {}
    return body.get("code"), str(body.get("message", ""))


@dataclass(frozen=True)
class TikTokAudiences:
    """Requests are relative to the API root (`https://business-api.tiktok.com`)."""

    name: str = "tiktok_audiences"
    advertiser_id: str = ""

    def build(self, batch: Batch, audience: str) -> HttpRequest:
        types = sorted({id_type for id_type, _ in batch.members}, key=list(ID_SCHEMA).index)
        rows = [[{"id": key, "audience_ids": [audience]} if column == id_type else {} for column in types]
                for id_type, key in batch.members]
        body = {"advertiser_ids": [self.advertiser_id], "action": "add" if batch.record.op == "add" else "delete",
                "id_schema": [ID_SCHEMA[t] for t in types], "batch_data": rows}
        return HttpRequest("POST", f"{API}/segment/mapping/", body, {})

    def authorize(self, request: HttpRequest, token: str) -> HttpRequest:
        return replace(request, headers={**request.headers, "Access-Token": token})

    def refused(self, body: dict) -> bool:
        code, _ = _error(body)
        return code not in (0, None)

    def classify(self, error: HttpError) -> Failure:
        code, text = _error(error.body)
        message = f"HTTP {error.status} code {code}: {text}"[:500]
        if error.status == 429 or code in THROTTLING_CODES:
            if "QPD" in text:
                return Failure(FailureKind.QUOTA_EXHAUSTED, message)
            return Failure(FailureKind.RATE_LIMITED, message, retry_after_seconds(error.headers) or (60.0 if "QPM" in text else 1.0))
        if error.status >= 500 or (isinstance(code, int) and code >= FIRST_SERVER_CODE):
            return Failure(FailureKind.RETRYABLE, message)
        return Failure(FailureKind.PERMANENT, message)

    def receipt(self, body: dict, batch: Batch) -> Receipt:
        return Receipt(len(batch.members), f"request_id={body.get('request_id', '')}")

    def report_request(self, account_id: str, page_token: str | None) -> HttpRequest:
        """A page of the advertiser's custom audiences with their size (`cover_num`), page by page."""
        query = {"advertiser_id": account_id, "page": page_token or "1", "page_size": REPORT_PAGE_SIZE}
        return HttpRequest("GET", f"{API}/dmp/custom_audience/list/?{urlencode(query)}", None, {})

    def read_report(self, body: dict) -> tuple[list[ReportedAudience], str | None]:
        """TikTok gives the matched people (`cover_num`), no match rate."""
        data = body.get("data") or {}
        audiences = [ReportedAudience(str(entry["audience_id"]), int(entry.get("cover_num") or 0), None,
                                      "valid" if entry.get("is_valid") else "not valid", entry.get("name"))
                     for entry in data.get("list", [])]
        return audiences, _next_page(data)

    def create_request(self, account_id: str, name: str) -> HttpRequest:
        body = {"custom_audience_name": name, "advertiser_id": account_id, "action": "create"}
        return HttpRequest("POST", f"{API}/segment/audience/", body, {})

    def created_id(self, body: dict, headers: dict[str, str]) -> str:
        return str((body.get("data") or {})["audience_id"])


def _next_page(data: dict) -> str | None:
    """The next page number of a paged list (`page_info`), None after the last."""
    page = data.get("page_info") or {}
    current, pages = int(page.get("page", 1)), int(page.get("total_page", 1))
    return str(current + 1) if current < pages else None
