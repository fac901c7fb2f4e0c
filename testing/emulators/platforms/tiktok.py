"""TikTok's audience segment mapping as connectors/destinations/tiktok/client.py reads its
documentation: a `POST /open_api/v1.3/segment/mapping/` with `action`, `id_schema` and
`batch_data` rows, the token in `Access-Token`, every answer HTTP 200 with a `code` (0: done),
and the advertiser's audience list paged by page number."""
from __future__ import annotations

import hashlib
import json
import math
from urllib.parse import parse_qs, urlparse

from audience_relay.testing.emulators.platforms.dialect import SHA256_HEX, Answer, Delivery, Report

MAPPING = "/open_api/v1.3/segment/mapping/"
AUDIENCE_LIST = "/open_api/v1.3/dmp/custom_audience/list/"
AUDIENCE_CREATE = "/open_api/v1.3/segment/audience/"
ID_TYPES = {"EMAIL_SHA256": "email", "PHONE_SHA256": "phone"}


def _answer(code: int, message: str, data: dict | None = None) -> Answer:
    return Answer(200, {"code": code, "message": message, "request_id": hashlib.md5(message.encode()).hexdigest(), "data": data or {}})


class TikTok:
    name = "tiktok_audiences"
    max_batch = 1_000

    def route(self, method: str, path: str) -> str | None:
        route = urlparse(path).path
        if method == "POST" and route == MAPPING:
            return "deliver"
        if method == "GET" and route == AUDIENCE_LIST:
            return "report"
        if method == "POST" and route == AUDIENCE_CREATE:
            return "create"
        return None

    def authenticated(self, headers, method: str, url: str, config) -> Answer | None:
        return None if headers.get("Access-Token") else self.unauthorized()

    def unauthorized(self) -> Answer:
        return _answer(40104, "Access token is null")

    def delivery(self, method: str, path: str, body: dict) -> Delivery | Answer:
        action, schema, rows = body.get("action"), body.get("id_schema") or [], body.get("batch_data") or []
        if action not in ("add", "delete") or not body.get("advertiser_ids"):
            return _answer(40002, "action: one of add, delete; advertiser_ids: required")
        if any(column not in ID_TYPES for column in schema) or any(len(row) != len(schema) for row in rows):
            return _answer(40002, "batch_data: each row holds one entry per id_schema column")
        members, audiences = [], set()
        for row in rows:
            for column, entry in zip(schema, row):
                if entry:
                    members.append((ID_TYPES[column], entry.get("id", "")))
                    audiences.update(entry.get("audience_ids") or [])
        if len(audiences) != 1:
            return _answer(40002, "audience_ids: each id names its audience")
        return Delivery(audiences.pop(), "add" if action == "add" else "remove", members)

    def malformed(self, members: list[tuple[str, str]]) -> str | None:
        bad = sum(1 for _, value in members if not SHA256_HEX.fullmatch(value))
        return f"{bad} ids are not SHA-256 hex digests" if bad else None

    def invalid(self, message: str) -> Answer:
        return _answer(40002, message)

    def oversize(self) -> Answer:
        return _answer(40011, f"batch_data: at most {self.max_batch} rows per request")

    def unavailable(self) -> Answer:
        return _answer(50002, "Internal service error, please try again later")

    def throttled(self, problem: str, retry_after: float) -> Answer:
        if problem == "daily_quota":
            return _answer(40100, "Too many requests: the app's daily limit (QPD) is reached")
        return _answer(40100, "Too many requests: the app's per-second limit (QPS) is reached")

    def accepted(self, delivery: Delivery) -> Answer:
        return _answer(0, "OK", {})

    def report(self, path: str, body: dict, largest_page: int) -> Report:
        query = parse_qs(urlparse(path).query)
        size = min(int(query.get("page_size", ["10"])[0]), 100, largest_page)
        return Report((int(query.get("page", ["1"])[0]) - 1) * size, size)

    def report_page(self, report: Report, rows: list[tuple[str, int, int]], total: int, names: dict[str, str]) -> Answer:
        entries = [{"audience_id": audience, "name": names.get(audience, audience), "cover_num": matched, "is_valid": True}
                   for audience, _, matched in rows]
        page_info = {"page": report.start // report.size + 1, "page_size": report.size, "total_number": total,
                     "total_page": max(1, math.ceil(total / report.size))}
        return _answer(0, "OK", {"list": entries, "page_info": page_info})

    def create(self, body: dict, path: str) -> str | Answer:
        name = body.get("custom_audience_name")
        if body.get("action") != "create" or not body.get("advertiser_id") or not isinstance(name, str) or not 0 < len(name) <= 128:
            return _answer(40002, "custom_audience_name, advertiser_id and action create are required")
        return name

    def created(self, platform_id: str) -> Answer:
        return _answer(0, "OK", {"audience_id": platform_id})

    def echoing(self, members: list[tuple[str, str]]) -> Answer:
        """Refuses the request quoting its first entries, as APIs quote invalid ids."""
        return _answer(40002, f"Invalid id in batch_data: {json.dumps([value for _, value in members[:3]])}")


DIALECT = TikTok()
