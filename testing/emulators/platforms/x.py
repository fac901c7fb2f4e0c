"""X Ads custom audiences as connectors/destinations/x/client.py reads its documentation: one
operation per request to `/12/accounts/{account}/custom_audiences/{id}/users`, requests signed
with OAuth 1.0a (the signature verified by oauthlib when the emulator knows the keys), counts in
`data`, `{errors: [{code, message}]}` errors and a 429 with `x-rate-limit-reset`."""
from __future__ import annotations

import json
import re
import time
from urllib.parse import parse_qs, urlparse

from oauthlib.common import Request
from oauthlib.oauth1.rfc5849 import signature, utils

from audience_relay.testing.emulators.platforms.dialect import SHA256_HEX, Answer, Delivery, Report

USERS = re.compile(r"/12/accounts/([^/]+)/custom_audiences/([^/]+)/users")
AUDIENCES = re.compile(r"/12/accounts/([^/]+)/custom_audiences")
ID_TYPES = {"email": "email", "phone_number": "phone", "device_id": "maid", "partner_user_id": "external_id"}


def _error(status: int, code: str, message: str, headers: dict | None = None) -> Answer:
    return Answer(status, {"errors": [{"code": code, "message": message}], "request": {"params": {}}}, headers or {})


class X:
    name = "x_custom_audiences"
    max_batch = 10_000

    def route(self, method: str, path: str) -> str | None:
        route = urlparse(path).path
        if method == "POST" and USERS.fullmatch(route):
            return "deliver"
        if AUDIENCES.fullmatch(route):
            return {"GET": "report", "POST": "create"}.get(method)
        return None

    def authenticated(self, headers, method: str, url: str, config) -> Answer | None:
        """An OAuth 1.0a header; with the emulator's `oauth1_keys`, its HMAC-SHA1 signature verified by oauthlib."""
        header = headers.get("Authorization", "")
        if not header.startswith("OAuth "):
            return self.unauthorized()
        if config.oauth1_keys is None:
            return None
        oauth = dict(utils.parse_authorization_header(header))
        request = Request(url, method, headers={"Authorization": header})
        request.params = signature.collect_parameters(uri_query=urlparse(url).query, headers={"Authorization": header},
                                                      exclude_oauth_signature=True)
        request.signature = utils.unescape(oauth.get("oauth_signature", ""))
        consumer_key, consumer_secret, token, token_secret = config.oauth1_keys
        if (oauth.get("oauth_consumer_key"), oauth.get("oauth_token")) != (consumer_key, token) \
                or not signature.verify_hmac_sha1(request, consumer_secret, token_secret):
            return self.unauthorized()
        return None

    def unauthorized(self) -> Answer:
        return _error(401, "UNAUTHORIZED_ACCESS", "This request is not properly authenticated")

    def delivery(self, method: str, path: str, body: object) -> Delivery | Answer:
        if not isinstance(body, list) or len(body) != 1 or body[0].get("operation_type") not in ("Update", "Delete"):
            return _error(400, "INVALID_PARAMETER", "one operation, operation_type Update or Delete")
        members = []
        for user in (body[0].get("params") or {}).get("users") or []:
            if len(user) != 1 or next(iter(user)) not in ID_TYPES or not isinstance(next(iter(user.values())), list):
                return _error(400, "INVALID_PARAMETER", "users: each an object of one identifier list")
            (key, values), = user.items()
            members.extend((ID_TYPES[key], value) for value in values)
        audience = USERS.fullmatch(urlparse(path).path).group(2)
        return Delivery(audience, "add" if body[0]["operation_type"] == "Update" else "remove", members)

    def malformed(self, members: list[tuple[str, str]]) -> str | None:
        bad = sum(1 for id_type, value in members if id_type != "external_id" and not SHA256_HEX.fullmatch(value))
        return f"{bad} users are not SHA-256 hex digests" if bad else None

    def invalid(self, message: str) -> Answer:
        return _error(400, "INVALID_PARAMETER", message)

    def oversize(self) -> Answer:
        return _error(400, "INVALID_PARAMETER", "payload too large")

    def unavailable(self) -> Answer:
        return _error(503, "OVER_CAPACITY", "Service is over capacity")

    def throttled(self, problem: str, retry_after: float) -> Answer:
        return _error(429, "TOO_MANY_REQUESTS", "Rate limit exceeded", {"x-rate-limit-reset": str(int(time.time() + retry_after + 0.999))})

    def accepted(self, delivery: Delivery) -> Answer:
        return Answer(200, {"data": {"success_count": len(delivery.members), "total_count": len(delivery.members)}, "operation_errors": [[]]})

    def echoing(self, members: list[tuple[str, str]]) -> Answer:
        return _error(400, "INVALID_PARAMETER", f"Invalid users: {json.dumps([value for _, value in members[:3]])}")

    def report(self, path: str, body: object, largest_page: int) -> Report:
        query = parse_qs(urlparse(path).query)
        return Report(int(query.get("cursor", ["0"])[0]), min(int(query.get("count", ["200"])[0]), largest_page))

    def report_page(self, report: Report, rows: list[tuple[str, int, int]], total: int, names: dict[str, str]) -> Answer:
        data = [{"id": audience, "name": names.get(audience, audience), "audience_size": matched or None, "targetable": matched >= 100,
                 "reasons_not_targetable": [] if matched >= 100 else ["TOO_SMALL"], "audience_type": "CRM"} for audience, _, matched in rows]
        following = report.start + report.size
        return Answer(200, {"data": data, "next_cursor": str(following) if following < total else None})

    def create(self, body: object, path: str) -> str | Answer:
        name = (parse_qs(urlparse(path).query).get("name") or [""])[0]
        return name if name else _error(400, "MISSING_PARAMETER", "name is required")

    def created(self, platform_id: str) -> Answer:
        return Answer(200, {"data": {"id": platform_id}})


DIALECT = X()
