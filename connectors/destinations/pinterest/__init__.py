"""Pinterest customer lists, over the HTTP API engine, with OAuth 2.0 refresh tokens."""
from __future__ import annotations

from audience_relay.connectors.destination import Destination
from audience_relay.connectors.destinations.pinterest.config import PinterestConnection, check_request_contract
from audience_relay.connectors.destinations.pinterest.profile import PROFILE
from audience_relay.connectors.destinations.shape import DestinationType, http_api_destination

TOKEN_URL = "https://api.pinterest.com/v5/oauth/token"


def connect(destination, endpoint: str | None = None) -> Destination:
    from audience_relay.connectors.destinations.pinterest.client import PinterestCustomerLists
    from audience_relay.connectors.http.oauth2 import refresh_token_grant

    return http_api_destination(destination, endpoint, lambda: PinterestCustomerLists(ad_account_id=destination.connection.account_id),
                                lambda secret: refresh_token_grant(secret, TOKEN_URL, basic_auth=True))


DESTINATION = DestinationType(PROFILE, connect, PinterestConnection, check_request_contract)
