"""Meta Custom Audiences: the Marketing API's customer-file audiences, over the HTTP API engine."""
from __future__ import annotations

from audience_relay.connectors.destination import Destination
from audience_relay.connectors.destinations.meta.config import MetaConnection
from audience_relay.connectors.destinations.meta.profile import PROFILE
from audience_relay.connectors.destinations.shape import DestinationType, http_api_destination
from audience_relay.connectors.secrets import resolve_secret


def connect(destination, endpoint: str | None = None) -> Destination:
    from audience_relay.connectors.destinations.meta.client import MetaCustomAudiences

    def api() -> MetaCustomAudiences:
        app_secret = destination.connection.app_secret if destination.connection else None   # when the app requires appsecret_proof
        return MetaCustomAudiences(app_secret=resolve_secret(app_secret.env, app_secret.secret_arn) if app_secret else None)

    return http_api_destination(destination, endpoint, api)


DESTINATION = DestinationType(PROFILE, connect, MetaConnection)
