"""X (Twitter) Ads custom audiences, over the HTTP API engine, signed with OAuth 1.0a."""
from __future__ import annotations

from audience_relay.connectors.destination import Destination
from audience_relay.connectors.destinations.shape import DestinationType, http_api_destination
from audience_relay.connectors.destinations.x.config import XConnection, check_request_contract
from audience_relay.connectors.destinations.x.profile import PROFILE


def connect(destination, endpoint: str | None = None) -> Destination:
    from audience_relay.connectors.destinations.x.client import XCustomAudiences, oauth1_credentials

    def token(secret: str) -> str:
        oauth1_credentials(secret)   # refused here, naming the fields, rather than at the first request
        return secret

    base_url = endpoint or destination.connection.base_url
    return http_api_destination(destination, endpoint, lambda: XCustomAudiences(base_url=base_url, account_id=destination.connection.account_id),
                                token)


DESTINATION = DestinationType(PROFILE, connect, XConnection, check_request_contract, creates_audiences=True)
