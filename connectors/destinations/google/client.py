"""Google Data Manager API, audience members (`audienceMembers:ingest` / `:remove`).

Up to 10,000 members per request, SHA-256 hex identifiers (`encoding: HEX`). Over a quota the
API answers 429 `RESOURCE_EXHAUSTED` with the quota's name in the `ErrorInfo` metadata: a
per-minute limit is waited out, a per-day limit defers the rest of the run to the reset.
"""
from __future__ import annotations

from dataclasses import dataclass

from audience_relay.connectors.destination import Batch, Receipt
from audience_relay.connectors.http.client import HttpError, HttpRequest, ReportedAudience, bearer, retry_after_seconds
from audience_relay.connectors.retry import Failure, FailureKind

IDENTIFIER_FIELDS = {"email": "emailAddress", "phone": "phoneNumber"}
CONSENT_FIELDS = {"ad_user_data": "adUserData", "ad_personalization": "adPersonalization"}
# The Google Ads API version feedback's report is written for (its root: https://googleads.googleapis.com/<version>).
GOOGLE_ADS_API_VERSION = "v26"
# Customer Match lists as the Google Ads API reports them (GAQL over `user_list`).
REPORT_QUERY = "SELECT user_list.id, user_list.size_for_search, user_list.match_rate_percentage FROM user_list WHERE user_list.type = CRM_BASED"


def _member(id_type: str, key: str) -> dict:
    if id_type == "maid":
        return {"mobileData": {"mobileIds": [key]}}
    return {"userData": {"userIdentifiers": [{IDENTIFIER_FIELDS[id_type]: key}]}}


def _consent(signals: dict[str, str | None]) -> dict:
    """The API's `Consent` message; an unspecified signal is left out (CONSENT_STATUS_UNSPECIFIED)."""
    return {field: f"CONSENT_{signals[signal].upper()}" for signal, field in CONSENT_FIELDS.items() if signals.get(signal)}


def _quota_limit(body: dict) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    for detail in error.get("details", []) if isinstance(error, dict) else []:
        limit = detail.get("metadata", {}).get("quota_limit") if isinstance(detail, dict) else None
        if limit:
            return limit
    return ""


@dataclass(frozen=True)
class GoogleDataManager:
    name: str = "google_data_manager"
    operating_account_id: str = ""
    operating_account_type: str = "GOOGLE_ADS"
    # The config's consent: signal -> "granted" | "denied", or {"column": ...} for a signal the
    # input gives per member (then in `Batch.member_consent`).
    consent: dict[str, str | dict] | None = None

    def _ingest_members(self, batch: Batch) -> tuple[list[dict], dict | None]:
        """The members, and the request's consent when the config fixes both signals; otherwise
        each member carries its own (the input's signals, the config's fixed ones filled in)."""
        members = [_member(id_type, key) for id_type, key in batch.members]
        fixed = {s: v for s, v in (self.consent or {}).items() if isinstance(v, str)}
        if not self.consent or len(fixed) == len(CONSENT_FIELDS):
            return members, _consent(fixed) if fixed else None
        for member, (id_type, key) in zip(members, batch.members):
            given = dict(zip(CONSENT_FIELDS, batch.member_consent.get((id_type, key), (None, None))))
            if consent := _consent({**given, **fixed}):
                member["consent"] = consent
        return members, None

    def build(self, batch: Batch, audience: str) -> HttpRequest:
        destination = {
            "operatingAccount": {"accountType": self.operating_account_type, "accountId": self.operating_account_id},
            "productDestinationId": audience,
        }
        if batch.record.op != "add":   # RemoveAudienceMembersRequest takes no consent
            body = {"destinations": [destination], "audienceMembers": [_member(t, k) for t, k in batch.members], "encoding": "HEX"}
            return HttpRequest("POST", "/v1/audienceMembers:remove", body, {})
        members, request_consent = self._ingest_members(batch)
        body = {"destinations": [destination], "audienceMembers": members, "encoding": "HEX",
                "termsOfService": {"customerMatchTermsOfServiceStatus": "ACCEPTED"}}
        if request_consent:   # the request's consent applies to every member of it
            body["consent"] = request_consent
        return HttpRequest("POST", "/v1/audienceMembers:ingest", body, {})

    def classify(self, error: HttpError) -> Failure:
        details = error.body.get("error") if isinstance(error.body, dict) else None
        details = details if isinstance(details, dict) else {}
        status = str(details.get("status", ""))
        message = f"HTTP {error.status} {status}: {details.get('message', '')}"[:500]
        if error.status == 429 or status == "RESOURCE_EXHAUSTED":
            if "PerDay" in _quota_limit(error.body):
                return Failure(FailureKind.QUOTA_EXHAUSTED, message)
            return Failure(FailureKind.RATE_LIMITED, message, retry_after_seconds(error.headers))
        if error.status >= 500 or status in ("UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED"):
            return Failure(FailureKind.RETRYABLE, message)
        return Failure(FailureKind.PERMANENT, message)

    def refused(self, body: dict) -> bool:
        return False   # errors are google.rpc.Status answers with a 4xx or 5xx

    def receipt(self, body: dict, batch: Batch) -> Receipt:
        return Receipt(len(batch.members), f"requestId={body.get('requestId', '')}")

    def authorize(self, request: HttpRequest, token: str) -> HttpRequest:
        return bearer(request, token)

    def report_request(self, account_id: str, page_token: str | None) -> HttpRequest:
        """A page of the customer's Customer Match lists with their size and match rate (page tokens),
        relative to the Google Ads API root with its version (`https://googleads.googleapis.com/<GOOGLE_ADS_API_VERSION>`)."""
        body = {"query": REPORT_QUERY, **({"pageToken": page_token} if page_token else {})}
        return HttpRequest("POST", f"/customers/{account_id}/googleAds:search", body, {})

    def read_report(self, body: dict) -> tuple[list[ReportedAudience], str | None]:
        audiences = []
        for result in body.get("results", []):
            listed = result.get("userList") or {}
            rate = listed.get("matchRatePercentage")
            audiences.append(ReportedAudience(str(listed["id"]), int(listed.get("sizeForSearch") or 0),
                                              None if rate is None else float(rate) / 100, "ENABLED"))
        return audiences, body.get("nextPageToken") or None
