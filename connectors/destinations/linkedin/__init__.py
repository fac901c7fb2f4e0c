"""LinkedIn Matched Audiences: DMP segments of users, over the HTTP API engine, with OAuth 2.0 refresh tokens."""
from __future__ import annotations

from audience_relay.connectors.destination import Destination
from audience_relay.connectors.destinations.linkedin.config import LinkedInConnection, check_request_contract
from audience_relay.connectors.destinations.linkedin.profile import PROFILE
from audience_relay.connectors.destinations.shape import DestinationType, http_api_destination

TOKEN_URL = "https://www.linkedin.com/oauth/v2/accessToken"


def connect(destination, endpoint: str | None = None) -> Destination:
    from audience_relay.connectors.destinations.linkedin.client import LinkedInDmpSegments
    from audience_relay.connectors.http.oauth2 import refresh_token_grant

    return http_api_destination(destination, endpoint, lambda: LinkedInDmpSegments(source_platform=destination.connection.source_platform),
                                lambda secret: refresh_token_grant(secret, TOKEN_URL))


DESTINATION = DestinationType(PROFILE, connect, LinkedInConnection, check_request_contract, creates_audiences=True)
