"""Snap Audience Match as connectors/destinations/snapchat/client.py reads its documentation:
`POST` / `DELETE /v1/segments/{id}/users` with `users` entries of one schema each, bearer tokens,
errors as `request_status: ERROR` with a `debug_message`, 429 when throttled (no header), and the
ad account's segments listed and created under `/v1/adaccounts/{id}/segments`."""
from __future__ import annotations

import hashlib
import json
import re
from urllib.parse import parse_qs, urlparse

from audience_relay.testing.emulators.platforms.dialect import SHA256_HEX, Answer, Delivery, Report

USERS = re.compile(r"/v1/segments/([^/]+)/users")
SEGMENTS = re.compile(r"/v1/adaccounts/([^/]+)/segments")
ID_TYPES = {"EMAIL_SHA256": "email", "PHONE_SHA256": "phone", "MOBILE_AD_ID_SHA256": "maid"}


def _error(status: int, message: str, code: str) -> Answer:
    return Answer(status, {"request_status": "ERROR", "request_id": hashlib.md5(message.encode()).hexdigest(),
                           "debug_message": message, "display_message": message, "error_code": code})


class Snapchat:
    name = "snapchat_audience_match"
    max_batch = 100_000
    bearer_tokens = True

    def route(self, method: str, path: str) -> str | None:
        route = urlparse(path).path
        if USERS.fullmatch(route) and method in ("POST", "DELETE"):
            return "deliver"
        if SEGMENTS.fullmatch(route):
            return {"GET": "report", "POST": "create"}.get(method)
        return None

    def authenticated(self, headers, method: str, url: str, config) -> Answer | None:
        return None if headers.get("Authorization", "").startswith("Bearer ") else self.unauthorized()

    def unauthorized(self) -> Answer:
        return _error(401, "Invalid or expired access token", "E1001")

    def delivery(self, method: str, path: str, body: dict) -> Delivery | Answer:
        members = []
        for entry in body.get("users") or []:
            schema, data = entry.get("schema") or [], entry.get("data") or []
            if len(schema) != 1 or schema[0] not in ID_TYPES or any(len(row) != 1 for row in data):
                return _error(400, "users: each entry holds one schema and rows of one id", "E2002")
            members.extend((ID_TYPES[schema[0]], row[0]) for row in data)
        if not members:
            return _error(400, "users: no identifiers", "E2002")
        return Delivery(USERS.fullmatch(urlparse(path).path).group(1), "add" if method == "POST" else "remove", members)

    def malformed(self, members: list[tuple[str, str]]) -> str | None:
        bad = sum(1 for _, value in members if not SHA256_HEX.fullmatch(value))
        return f"{bad} identifiers are not SHA-256 hex digests" if bad else None

    def invalid(self, message: str) -> Answer:
        return _error(400, message, "E2002")

    def oversize(self) -> Answer:
        return _error(400, f"users: at most {self.max_batch} identifiers per request", "E2003")

    def unavailable(self) -> Answer:
        return _error(503, "Service unavailable", "E5000")

    def throttled(self, problem: str, retry_after: float) -> Answer:
        return _error(429, "Too many requests", "E1008")

    def accepted(self, delivery: Delivery) -> Answer:
        counts = {}
        for id_type, _ in delivery.members:
            counts[id_type] = counts.get(id_type, 0) + 1
        return Answer(200, {"request_status": "SUCCESS", "request_id": hashlib.md5(repr(delivery.members).encode()).hexdigest(),
                            "users": [{"sub_request_status": "SUCCESS", "user": {"number_uploaded_users": n}} for n in counts.values()]})

    def echoing(self, members: list[tuple[str, str]]) -> Answer:
        return _error(400, f"Invalid identifiers: {json.dumps([value for _, value in members[:3]])}", "E2002")

    def report(self, path: str, body: dict, largest_page: int) -> Report:
        query = parse_qs(urlparse(path).query)
        return Report(int(query.get("cursor", ["0"])[0]), min(int(query.get("limit", ["50"])[0]), largest_page))

    def report_page(self, report: Report, rows: list[tuple[str, int, int]], total: int, names: dict[str, str]) -> Answer:
        segments = [{"sub_request_status": "SUCCESS", "segment": {"id": audience, "name": names.get(audience, audience), "status": "ACTIVE",
                                                                  "targetable_status": "READY", "approximate_number_users": matched}}
                    for audience, _, matched in rows]
        following = report.start + report.size
        paging = {"next_link": f"https://adsapi.snapchat.com/v1/adaccounts/a/segments?cursor={following}&limit={report.size}"} if following < total else {}
        return Answer(200, {"request_status": "SUCCESS", "segments": segments, "paging": paging})

    def create(self, body: dict, path: str) -> str | Answer:
        segments = body.get("segments") or [{}]
        segment = segments[0]
        if len(segments) != 1 or not segment.get("name") or segment.get("source_type") != "FIRST_PARTY" or not segment.get("ad_account_id"):
            return _error(400, "segments: name, source_type FIRST_PARTY and ad_account_id are required", "E2002")
        return segment["name"]

    def created(self, platform_id: str) -> Answer:
        return Answer(200, {"request_status": "SUCCESS", "segments": [{"sub_request_status": "SUCCESS", "segment": {"id": platform_id}}]})


DIALECT = Snapchat()
