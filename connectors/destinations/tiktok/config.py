"""A TikTok destination's `connection`, and what every one of its requests needs."""
from __future__ import annotations

import re

from audience_relay.connectors.destinations.connection import HttpConnection

DIGITS = re.compile(r"[0-9]+")


class TikTokConnection(HttpConnection):
    """`account_id` is the advertiser id; `audience_ids` each audience's TikTok audience id."""


def check_request_contract(destination) -> None:
    """Every mapping request names the advertiser and each member's audience by TikTok's ids."""
    connection = destination.connection
    if connection is None:
        raise ValueError("connection: tiktok_audiences needs base_url, account_id and audience_ids")
    if connection.account_id is None or not DIGITS.fullmatch(connection.account_id):
        raise ValueError("connection.account_id: the TikTok advertiser id (digits) is required, sent as advertiser_ids")
    missing = sorted(set(destination.audiences) - set(connection.audience_ids))
    if missing:
        raise ValueError(f"connection.audience_ids: audiences {missing} have no TikTok audience id")
    for audience, audience_id in sorted(connection.audience_ids.items()):
        if not DIGITS.fullmatch(audience_id):
            raise ValueError(f"connection.audience_ids.{audience}: {audience_id!r} is not a TikTok audience id (digits)")
