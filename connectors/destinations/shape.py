"""The inner shape every destination folder has: a profile (its published limits and identifier
rules), the model of its `connection` config (and any check across its keys), and `connect`, which
builds its connector from the destination's config.

`connect(destination, endpoint)` receives the validated config entry (pipeline/config.py) and an
endpoint that overrides its URL (an emulator); it runs where the batches are sent (a Spark
executor, a Lambda), so secrets are resolved there and never travel in the plan.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from audience_relay.connectors.destination import Destination
from audience_relay.connectors.destinations.connection import Connection
from audience_relay.connectors.profiles import Profile
from audience_relay.connectors.secrets import resolve_secret


class UnsupportedDestination(ValueError):
    """The destination's kind or profile has no connector in this build, or lacks what it needs."""


class DestinationConfigError(ValueError):
    """A value of the destination's config is unusable once read (a known_hosts file, say)."""


def reports_at_base_url(destination, endpoint: str | None) -> tuple[str | None, dict[str, str]]:
    """An HTTP API's audience reports: at the emulator's endpoint, else `report_base_url`, else
    (None) its `base_url`; no header beyond the token."""
    return endpoint or destination.connection.report_base_url, {}


@dataclass(frozen=True)
class DestinationType:
    profile: Profile
    connect: Callable[[object, str | None], Destination]
    connection: type[Connection]
    # Rules across the destination's keys its platform's requests need (raises ValueError naming the key).
    check: Callable[[object], None] | None = None
    # Where `feedback` reads its audience reports, and the headers that API needs beyond the token.
    report_access: Callable[[object, str | None], tuple[str | None, dict[str, str]]] = reports_at_base_url
    # Its API creates audiences (the client is also a CreatesAudiences): an audience without an
    # id in the config is found by name or created on first delivery, and its id recorded.
    creates_audiences: bool = False


def credential(destination) -> str:
    """The destination's secret, from its `credentials` (an environment variable or Secrets Manager)."""
    if destination.credentials is None:
        raise UnsupportedDestination(f"destination {destination.id}: `credentials` are required for {destination.kind}")
    return resolve_secret(destination.credentials.env, destination.credentials.secret_arn)


def http_api_destination(destination, endpoint: str | None, api: Callable[[], object], token: Callable[[str], str] = str) -> Destination:
    """The HTTP API engine (connectors/http/client.py) with a platform's request shape `api()`, for
    one configured destination; `token` turns its secret into what the requests carry."""
    from audience_relay.connectors.http.client import HttpApiDestination

    connection = destination.connection
    base_url = endpoint or (connection and connection.base_url)
    if not base_url:
        raise UnsupportedDestination(f"destination {destination.id}: connection.base_url is required")
    audience_ids = connection.audience_ids if connection else {}
    timeout = connection.timeout_seconds if connection else 30.0
    secret = token(credential(destination))
    return HttpApiDestination(base_url, api(), token=secret, timeout_seconds=timeout, audience_ids=audience_ids)
