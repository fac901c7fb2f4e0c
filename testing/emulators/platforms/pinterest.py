"""Pinterest customer lists as connectors/destinations/pinterest/client.py reads its API
description: a `PATCH` of `records` (one comma-separated string) to a list, bearer tokens,
`{code, message}` errors, 429 code 8 when throttled (no header), and the ad account's audiences
(built on the lists) with their size, paged by `bookmark`. Lists are EMAIL lists here."""
from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlparse

from audience_relay.testing.emulators.platforms.dialect import Answer, Delivery, Report

LIST = re.compile(r"/v5/ad_accounts/([^/]+)/customer_lists/([^/]+)")
AUDIENCES = re.compile(r"/v5/ad_accounts/([^/]+)/audiences")
# The API description: "Emails must be lowercase and can be plain text or hashed using SHA1, SHA256, or MD5."
RECORD = re.compile(r"[0-9a-f]{64}|[0-9a-f]{40}|[0-9a-f]{32}|[^A-Z\s,]+@[^A-Z\s,]+")


def _error(status: int, code: int, message: str) -> Answer:
    return Answer(status, {"code": code, "message": message})


class Pinterest:
    name = "pinterest_customer_lists"
    max_batch = 10_000
    bearer_tokens = True

    def route(self, method: str, path: str) -> str | None:
        route = urlparse(path).path
        if method == "PATCH" and LIST.fullmatch(route):
            return "deliver"
        if method == "GET" and AUDIENCES.fullmatch(route):
            return "report"
        return None

    def authenticated(self, headers, method: str, url: str, config) -> Answer | None:
        return None if headers.get("Authorization", "").startswith("Bearer ") else self.unauthorized()

    def unauthorized(self) -> Answer:
        return _error(401, 2, "Authentication failed.")

    def delivery(self, method: str, path: str, body: dict) -> Delivery | Answer:
        operation, records = body.get("operation_type"), body.get("records")
        if operation not in ("ADD", "REMOVE") or not isinstance(records, str) or not records.strip(","):
            return _error(400, 1, "operation_type ADD or REMOVE and records are required")
        members = [("email", record) for record in records.split(",") if record]
        return Delivery(LIST.fullmatch(urlparse(path).path).group(2), "add" if operation == "ADD" else "remove", members)

    def malformed(self, members: list[tuple[str, str]]) -> str | None:
        bad = sum(1 for _, value in members if not RECORD.fullmatch(value))
        return f"{bad} records are neither lower-case emails nor hex digests" if bad else None

    def invalid(self, message: str) -> Answer:
        return _error(400, 1, message)

    def oversize(self) -> Answer:
        return _error(400, 1, f"records: at most {self.max_batch} per request")

    def unavailable(self) -> Answer:
        return _error(503, 0, "Service unavailable")

    def throttled(self, problem: str, retry_after: float) -> Answer:
        return _error(429, 8, "This request exceeded a rate limit. This can be caused by making too many requests.")

    def accepted(self, delivery: Delivery) -> Answer:
        return Answer(200, {"id": delivery.audience, "type": "customerlist", "status": "PROCESSING", "num_batches": 1,
                            "num_uploaded_user_records": len(delivery.members) if delivery.op == "add" else 0,
                            "num_removed_user_records": len(delivery.members) if delivery.op == "remove" else 0})

    def echoing(self, members: list[tuple[str, str]]) -> Answer:
        return _error(400, 1, f"Invalid records: {json.dumps([value for _, value in members[:3]])}")

    def report(self, path: str, body: dict, largest_page: int) -> Report:
        query = parse_qs(urlparse(path).query)
        return Report(int(query.get("bookmark", ["0"])[0]), min(int(query.get("page_size", ["25"])[0]), largest_page))

    def report_page(self, report: Report, rows: list[tuple[str, int, int]], total: int, names: dict[str, str]) -> Answer:
        items = [{"id": f"25{audience}", "name": names.get(audience, audience), "audience_type": "CUSTOMER_LIST", "size": matched,
                  "status": "READY" if matched >= 100 else "TOO_SMALL", "rule": {"customer_list_id": audience}} for audience, _, matched in rows]
        following = report.start + report.size
        return Answer(200, {"items": items, "bookmark": str(following) if following < total else None})


DIALECT = Pinterest()
