"""What the emulator needs of a platform: which requests are its deliveries and reports, what
it reads from them, and its answers. The emulator keeps the limits, the faults and the score."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Delivery:
    """An add or remove request as the platform reads it."""

    audience: str
    op: str                              # "add" or "remove"
    members: list[tuple[str, str]]       # (our id type, the id as sent)
    key: str | None = None               # the platform's idempotency key, if it has one


@dataclass(frozen=True)
class Report:
    """A report page asked for: where it starts and how many audiences it holds."""

    start: int
    size: int


class Dialect(Protocol):
    name: str
    max_batch: int    # the platform's members per request

    def route(self, method: str, path: str) -> str | None:
        """"deliver", "report", "create" (an audience), or None when the request is not this platform's."""

    def authenticated(self, headers, method: str, url: str, config) -> Answer | None:
        """None when the request carries a credential (`url`: the whole URL, as a signature covers
        it; `config`: the emulator's settings); else the platform's answer to it."""

    def unauthorized(self) -> Answer:
        """The platform's answer to a missing or dead credential (a bearer-token platform's 401:
        the client renews its token once). `bearer_tokens = True` on the dialect: with the
        emulator's refresh-token grants on, only tokens it issued and not expired are live."""

    def delivery(self, method: str, path: str, body: dict) -> Delivery | Answer:
        """The members the request adds or removes, or the platform's answer to a malformed request."""

    def malformed(self, members: list[tuple[str, str]]) -> str | None:
        """Why the platform refuses an id of these (its format), or None."""

    def invalid(self, message: str) -> Answer: ...

    def oversize(self) -> Answer: ...

    def unavailable(self) -> Answer: ...

    def throttled(self, problem: str, retry_after: float) -> Answer:
        """`problem`: "429" (an injected burst), "rate_limit" or "daily_quota"."""

    def accepted(self, delivery: Delivery) -> Answer: ...

    def echoing(self, members: list[tuple[str, str]]) -> Answer:
        """A refusal that quotes the request's entries, as APIs quote invalid ids."""

    def report(self, path: str, body: dict, largest_page: int) -> Report:
        """The page the request asks for, at most `largest_page` audiences (the emulator's setting)."""

    def report_page(self, report: Report, rows: list[tuple[str, int, int]], total: int, names: dict[str, str]) -> Answer:
        """The page of (audience, members, matched) rows; `total` audiences in all; `names` of
        the audiences created through the API (others are named by their id)."""

    def create(self, body: dict, path: str) -> str | Answer:
        """The name of the audience the request creates, or the platform's answer to a malformed one."""

    def created(self, platform_id: str) -> Answer: ...
