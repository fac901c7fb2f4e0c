"""A TikTok destination's `connection`, and what every one of its requests needs."""
from __future__ import annotations

import re

from audience_relay.connectors.destinations.connection import HttpConnection

DIGITS = re.compile(r"[0-9]+")


class TikTokConnection(HttpConnection):
    """`account_id` is the advertiser id; `audience_ids` each audience's TikTok audience id, where
    it exists already: an audience without one is found by its name, or created, on first delivery."""


def check_request_contract(destination) -> None:
    """Every mapping request names the advertiser and each member's audience by TikTok's ids."""
    connection = destination.connection
    if connection is None:
        raise ValueError("connection: tiktok_audiences needs base_url and account_id")
    if connection.account_id is None or not DIGITS.fullmatch(connection.account_id):
        raise ValueError("connection.account_id: the TikTok advertiser id (digits) is required, sent as advertiser_ids")
    for audience, audience_id in sorted(connection.audience_ids.items()):
        if not DIGITS.fullmatch(audience_id):
            raise ValueError(f"connection.audience_ids.{audience}: {audience_id!r} is not a TikTok audience id (digits)")
