"""LinkedIn DMP segments as connectors/destinations/linkedin/client.py reads its documentation:
a `BATCH_CREATE` of user elements to `/rest/dmpSegments/{id}/users` under a `LinkedIn-Version`
and Rest.li 2.0, bearer tokens, a `status` per element in a 200, `{message, serviceErrorCode,
status}` errors, 429 when throttled (no header), segments found per account and created with
the id in `x-restli-id`."""
from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlparse

from audience_relay.testing.emulators.platforms.dialect import SHA256_HEX, Answer, Delivery, Report

USERS = re.compile(r"/rest/dmpSegments/([^/]+)/users")
ID_TYPES = {"SHA256_EMAIL": "email", "GOOGLE_AID": "maid"}
MAID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _error(status: int, message: str, code: int) -> Answer:
    return Answer(status, {"message": message, "serviceErrorCode": code, "status": status})


class LinkedIn:
    name = "linkedin_dmp_segments"
    max_batch = 5_000
    bearer_tokens = True

    def route(self, method: str, path: str) -> str | None:
        route = urlparse(path).path
        if method == "POST" and USERS.fullmatch(route):
            return "deliver"
        if route == "/rest/dmpSegments":
            return {"GET": "report", "POST": "create"}.get(method)
        return None

    def authenticated(self, headers, method: str, url: str, config) -> Answer | None:
        if not headers.get("Authorization", "").startswith("Bearer "):
            return self.unauthorized()
        if not headers.get("LinkedIn-Version") or headers.get("X-Restli-Protocol-Version") != "2.0.0":
            return _error(400, "LinkedIn-Version and X-Restli-Protocol-Version 2.0.0 are required", 100)
        return None

    def unauthorized(self) -> Answer:
        return _error(401, "Invalid access token", 65600)

    def delivery(self, method: str, path: str, body: dict) -> Delivery | Answer:
        elements = body.get("elements") or []
        actions = {element.get("action") for element in elements}
        if not elements or len(actions) != 1 or not actions <= {"ADD", "REMOVE"}:
            return _error(400, "elements: each with action ADD or REMOVE, one action per request", 100)
        members = []
        for element in elements:
            ids = element.get("userIds") or []
            if len(ids) != 1 or ids[0].get("idType") not in ID_TYPES:
                return _error(400, "userIds: one SHA256_EMAIL or GOOGLE_AID per element", 100)
            members.append((ID_TYPES[ids[0]["idType"]], ids[0].get("idValue", "")))
        return Delivery(USERS.fullmatch(urlparse(path).path).group(1), "add" if actions == {"ADD"} else "remove", members)

    def malformed(self, members: list[tuple[str, str]]) -> str | None:
        bad = sum(1 for id_type, value in members if not (MAID if id_type == "maid" else SHA256_HEX).fullmatch(value))
        return f"{bad} idValues are not in their idType's format" if bad else None

    def invalid(self, message: str) -> Answer:
        return _error(400, message, 100)

    def oversize(self) -> Answer:
        return _error(400, f"elements: at most {self.max_batch} per request", 100)

    def unavailable(self) -> Answer:
        return _error(503, "Service unavailable", 0)

    def throttled(self, problem: str, retry_after: float) -> Answer:
        return _error(429, "Resource level throttle limit reached" if problem != "daily_quota" else "Application daily limit reached", 0)

    def accepted(self, delivery: Delivery) -> Answer:
        return Answer(200, {"elements": [{"status": 201} for _ in delivery.members]})

    def echoing(self, members: list[tuple[str, str]]) -> Answer:
        return _error(400, f"Invalid idValue: {json.dumps([value for _, value in members[:3]])}", 100)

    def report(self, path: str, body: dict, largest_page: int) -> Report:
        query = parse_qs(urlparse(path).query)
        return Report(int(query.get("start", ["0"])[0]), min(int(query.get("count", ["10"])[0]), largest_page))

    def report_page(self, report: Report, rows: list[tuple[str, int, int]], total: int, names: dict[str, str]) -> Answer:
        elements = [{"id": audience, "name": names.get(audience, audience), "type": "USER", "inputCount": members,
                     "destinations": [{"destination": "LINKEDIN", "status": "READY", "audienceSize": matched, "matchedCount": matched}]}
                    for audience, members, matched in rows]
        return Answer(200, {"elements": elements, "paging": {"start": report.start, "count": report.size, "total": total}})

    def create(self, body: dict, path: str) -> str | Answer:
        if not body.get("name") or not body.get("sourcePlatform") or not str(body.get("account", "")).startswith("urn:li:sponsoredAccount:") \
                or body.get("type") != "USER" or body.get("destinations") != [{"destination": "LINKEDIN"}]:
            return _error(422, "name, sourcePlatform, account, type USER and destinations LINKEDIN are required", 100)
        return body["name"]

    def created(self, platform_id: str) -> Answer:
        return Answer(201, {}, {"x-restli-id": platform_id})


DIALECT = LinkedIn()
