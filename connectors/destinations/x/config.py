"""An X destination's `connection`."""
from __future__ import annotations

import re

from audience_relay.connectors.destinations.connection import HttpConnection

ACCOUNT = re.compile(r"[0-9a-z]{1,32}")


class XConnection(HttpConnection):
    """`account_id` is the ads account id (`18ce54d4x5t`); `audience_ids` each audience's custom
    audience id, where it exists: others are found by name, or created, on first delivery."""


def check_request_contract(destination) -> None:
    connection = destination.connection
    if connection is None or connection.account_id is None or not ACCOUNT.fullmatch(connection.account_id):
        raise ValueError("connection.account_id: the X ads account id (lower-case letters and digits) is required")
