"""X Ads API v12, custom audience users (`/12/accounts/{account}/custom_audiences/{id}/users`).

A batch is one operation (`Update` adds, `Delete` removes) whose `users` each carry one
identifier list (`email`, `phone_number`, `device_id`: SHA-256 hex; `partner_user_id` in clear).
Requests are signed with OAuth 1.0a (HMAC-SHA1, oauthlib), from the app's consumer key and secret
and the user's access token and secret. X answers `{data: {success_count, total_count}}`, every
error as `{errors: [{code, message}]}`; a 429 carries `x-rate-limit-reset` (epoch seconds), the
wait; 503 `OVER_CAPACITY` and 5xx are retried. Audiences are listed per account (`next_cursor`)
and created by name (query parameters).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from urllib.parse import urlencode

from oauthlib.oauth1 import Client as OAuth1Client

from audience_relay.connectors.destination import Batch, Receipt
from audience_relay.connectors.http.client import HttpError, HttpRequest, ReportedAudience
from audience_relay.connectors.retry import Failure, FailureKind
from audience_relay.connectors.secrets import json_fields

API = "/12"
USER_KEYS = {"email": "email", "phone": "phone_number", "maid": "device_id", "external_id": "partner_user_id"}
OPERATIONS = {"add": "Update", "remove": "Delete"}
SECRET_FIELDS = ("consumer_key", "consumer_secret", "access_token", "access_token_secret")
PAGE_SIZE = 1000


def _reset_wait(headers: dict[str, str], now: float) -> float | None:
    """Seconds until the window resets: the account's limit first, then the user's."""
    lowered = {name.lower(): value for name, value in headers.items()}
    for name in ("x-account-rate-limit-reset", "x-rate-limit-reset"):
        try:
            return max(0.0, float(lowered[name]) - now)
        except (KeyError, ValueError):
            continue
    return None


def oauth1_credentials(secret: str) -> dict[str, str]:
    """The secret's four OAuth 1.0a values (JSON)."""
    return json_fields(secret, SECRET_FIELDS)


@dataclass(frozen=True)
class XCustomAudiences:
    """`base_url` is the API root (`https://ads-api.x.com`): OAuth 1.0a signs the whole URL."""

    base_url: str = "https://ads-api.x.com"
    name: str = "x_custom_audiences"
    account_id: str = ""

    def build(self, batch: Batch, audience: str) -> HttpRequest:
        users = [{USER_KEYS[id_type]: [key]} for id_type, key in batch.members]
        body = [{"operation_type": OPERATIONS[batch.record.op], "params": {"users": users}}]
        return HttpRequest("POST", f"{API}/accounts/{self.account_id}/custom_audiences/{audience}/users", body, {"Content-Type": "application/json"})

    def authorize(self, request: HttpRequest, token: str) -> HttpRequest:
        """An OAuth 1.0a `Authorization` header; `token` is the secret's JSON of the four values.
        A JSON body is not part of the signature (RFC 5849 section 3.4.1.3)."""
        keys = oauth1_credentials(token)
        signer = OAuth1Client(keys["consumer_key"], client_secret=keys["consumer_secret"], resource_owner_key=keys["access_token"],
                              resource_owner_secret=keys["access_token_secret"])
        _, headers, _ = signer.sign(f"{self.base_url.rstrip('/')}{request.path}", request.method)
        return replace(request, headers={**request.headers, "Authorization": headers["Authorization"]})

    def refused(self, body: dict) -> bool:
        if not isinstance(body, dict):
            return False
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        counted = "success_count" in data and data.get("success_count") != data.get("total_count")
        return bool(body.get("errors") or body.get("operation_errors") and any(body["operation_errors"]) or counted)

    def classify(self, error: HttpError) -> Failure:
        body = error.body if isinstance(error.body, dict) else {}
        first = (body.get("errors") or [{}])[0] if isinstance(body.get("errors"), list) else {}
        message = f"HTTP {error.status} {first.get('code', '')}: {first.get('message', '')}"[:500]
        if error.status == 429 or first.get("code") == "TOO_MANY_REQUESTS":
            return Failure(FailureKind.RATE_LIMITED, message, _reset_wait(error.headers, time.time()))
        if error.status >= 500 or first.get("code") in ("OVER_CAPACITY", "SERVICE_UNAVAILABLE", "INTERNAL_ERROR"):
            return Failure(FailureKind.RETRYABLE, message)
        if error.status < 300:   # a 200 whose counts fall short: the whole payload is sent again
            return Failure(FailureKind.RETRYABLE, f"HTTP {error.status}: {json.dumps(body.get('data'))[:200]} {message}")
        return Failure(FailureKind.PERMANENT, message)

    def receipt(self, body: dict, batch: Batch) -> Receipt:
        data = body.get("data") or {}
        return Receipt(int(data.get("success_count", len(batch.members))), f"total={data.get('total_count')}")

    def report_request(self, account_id: str, page_token: str | None) -> HttpRequest:
        query = {"count": PAGE_SIZE, **({"cursor": page_token} if page_token else {})}
        return HttpRequest("GET", f"{API}/accounts/{account_id}/custom_audiences?{urlencode(query)}", None, {})

    def read_report(self, body: dict) -> tuple[list[ReportedAudience], str | None]:
        """X gives `audience_size` (null until processed), no match rate."""
        audiences = [ReportedAudience(str(entry["id"]), int(entry.get("audience_size") or 0), None,
                                      "targetable" if entry.get("targetable") else ",".join(entry.get("reasons_not_targetable") or []),
                                      entry.get("name"))
                     for entry in body.get("data") or []]
        return audiences, body.get("next_cursor") or None

    def create_request(self, account_id: str, name: str) -> HttpRequest:
        return HttpRequest("POST", f"{API}/accounts/{account_id}/custom_audiences?{urlencode({'name': name})}", None, {})

    def created_id(self, body: dict, headers: dict[str, str]) -> str:
        return str(body["data"]["id"])
