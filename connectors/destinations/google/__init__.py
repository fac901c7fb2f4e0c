"""Google Data Manager: audience members ingest, over the HTTP API engine, with OAuth 2.0 tokens."""
from __future__ import annotations

from audience_relay.connectors.destination import Destination
from audience_relay.connectors.destinations.google.profile import PROFILE
from audience_relay.connectors.destinations.shape import DestinationType, http_api_destination


def connect(destination, endpoint: str | None = None) -> Destination:
    from audience_relay.connectors.destinations.google.client import GoogleDataManager
    from audience_relay.connectors.destinations.google.oauth import google_access_token

    connection = destination.connection

    def api() -> GoogleDataManager:
        return GoogleDataManager(operating_account_id=(connection.account_id if connection else None) or "",
                                 consent=connection.consent.model_dump() if connection and connection.consent else None)

    return http_api_destination(destination, endpoint, api, google_access_token)


DESTINATION = DestinationType(PROFILE, connect)
