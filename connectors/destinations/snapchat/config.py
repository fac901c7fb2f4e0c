"""A Snapchat destination's `connection`."""
from __future__ import annotations

import re

from audience_relay.connectors.destinations.connection import HttpConnection

SNAP_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class SnapchatConnection(HttpConnection):
    """`account_id` is the ad account id (a UUID); `audience_ids` each audience's segment id, where
    the segment exists already: an audience without one is found by name, or created, on first delivery."""


def check_request_contract(destination) -> None:
    """Segments are created and listed under the ad account."""
    connection = destination.connection
    if connection is None or connection.account_id is None or not SNAP_ID.fullmatch(connection.account_id):
        raise ValueError("connection.account_id: the Snapchat ad account id (a lower-case UUID) is required")
