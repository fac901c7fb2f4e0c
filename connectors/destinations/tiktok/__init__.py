"""TikTok audiences: the Marketing API's audience segment mapping, over the HTTP API engine."""
from __future__ import annotations

from audience_relay.connectors.destination import Destination
from audience_relay.connectors.destinations.shape import DestinationType, http_api_destination
from audience_relay.connectors.destinations.tiktok.config import TikTokConnection, check_request_contract
from audience_relay.connectors.destinations.tiktok.profile import PROFILE


def connect(destination, endpoint: str | None = None) -> Destination:
    from audience_relay.connectors.destinations.tiktok.client import TikTokAudiences

    return http_api_destination(destination, endpoint, lambda: TikTokAudiences(advertiser_id=destination.connection.account_id))


DESTINATION = DestinationType(PROFILE, connect, TikTokConnection, check_request_contract, creates_audiences=True)
