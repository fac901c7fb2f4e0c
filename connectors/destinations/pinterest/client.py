"""Pinterest API v5, customer lists (`/v5/ad_accounts/{account}/customer_lists/{list}`).

A batch is one `PATCH` with `operation_type` ADD or REMOVE and its `records`, the hashed ids as
one comma-separated string. The token is an OAuth 2.0 bearer token (a refresh token's; the token
endpoint takes the app's id and secret as HTTP Basic authentication). Errors are `{code,
message}`: a 429 (code 8) waits (Pinterest sends no wait: the backoff applies), 5xx is retried,
the rest dead-letters the batch. The sizes `feedback` reads are those of the account's audiences
built on the lists (`rule.customer_list_id`), paged by `bookmark`.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from audience_relay.connectors.destination import Batch, Receipt
from audience_relay.connectors.http.client import HttpError, HttpRequest, ReportedAudience, bearer, failure_by_status
from audience_relay.connectors.retry import Failure

PAGE_SIZE = 250


@dataclass(frozen=True)
class PinterestCustomerLists:
    """Requests are relative to the API root (`https://api.pinterest.com`)."""

    name: str = "pinterest_customer_lists"
    ad_account_id: str = ""

    def build(self, batch: Batch, audience: str) -> HttpRequest:
        body = {"operation_type": "ADD" if batch.record.op == "add" else "REMOVE", "records": ",".join(key for _, key in batch.members)}
        return HttpRequest("PATCH", f"/v5/ad_accounts/{self.ad_account_id}/customer_lists/{audience}", body, {})

    def authorize(self, request: HttpRequest, token: str) -> HttpRequest:
        return bearer(request, token)

    def refused(self, body: dict) -> bool:
        return False   # errors are 4xx or 5xx answers

    def classify(self, error: HttpError) -> Failure:
        body = error.body if isinstance(error.body, dict) else {}
        return failure_by_status(error, f"HTTP {error.status} code {body.get('code', '')}: {body.get('message', '')}"[:500])

    def receipt(self, body: dict, batch: Batch) -> Receipt:
        return Receipt(len(batch.members), f"batches={body.get('num_batches')} status={body.get('status')}")

    def report_request(self, account_id: str, page_token: str | None) -> HttpRequest:
        """A page of the ad account's audiences with their size."""
        query = {"page_size": PAGE_SIZE, **({"bookmark": page_token} if page_token else {})}
        return HttpRequest("GET", f"/v5/ad_accounts/{account_id}/audiences?{urlencode(query)}", None, {})

    def read_report(self, body: dict) -> tuple[list[ReportedAudience], str | None]:
        """Audiences built on a customer list, by the list's id (the id the config names)."""
        audiences = [ReportedAudience(str(item["rule"]["customer_list_id"]), int(item.get("size") or 0), None, str(item.get("status", "")))
                     for item in body.get("items") or [] if (item.get("rule") or {}).get("customer_list_id")]
        return audiences, body.get("bookmark") or None
