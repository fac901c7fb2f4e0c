"""Snapchat: Snap Audience Match segments, over the HTTP API engine, with OAuth 2.0 refresh tokens."""
from __future__ import annotations

from audience_relay.connectors.destination import Destination
from audience_relay.connectors.destinations.shape import DestinationType, http_api_destination
from audience_relay.connectors.destinations.snapchat.config import SnapchatConnection, check_request_contract
from audience_relay.connectors.destinations.snapchat.profile import PROFILE

TOKEN_URL = "https://accounts.snapchat.com/login/oauth2/access_token"


def connect(destination, endpoint: str | None = None) -> Destination:
    from audience_relay.connectors.destinations.snapchat.client import SnapchatAudienceMatch
    from audience_relay.connectors.http.oauth2 import refresh_token_grant

    return http_api_destination(destination, endpoint, SnapchatAudienceMatch, lambda secret: refresh_token_grant(secret, TOKEN_URL))


DESTINATION = DestinationType(PROFILE, connect, SnapchatConnection, check_request_contract, creates_audiences=True)
