"""A LinkedIn destination's `connection`."""
from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

from audience_relay.connectors.destinations.connection import HttpConnection

DIGITS = re.compile(r"[0-9]+")


class LinkedInConnection(HttpConnection):
    """`account_id` is the sponsored (ad) account id; `audience_ids` each audience's DMP segment id,
    where the segment exists: others are found by name, or created, on first delivery."""

    # The `sourcePlatform` LinkedIn assigned to the integration: segments are created with it.
    source_platform: Annotated[str, Field(pattern=r"^[A-Z0-9_]{1,64}$")] | None = None


def check_request_contract(destination) -> None:
    """Segments belong to a sponsored account, and are created under the integration's source platform."""
    connection = destination.connection
    if connection is None or connection.account_id is None or not DIGITS.fullmatch(connection.account_id):
        raise ValueError("connection.account_id: the LinkedIn sponsored account id (digits) is required")
    to_create = sorted(set(destination.audiences) - set(connection.audience_ids))
    if to_create and connection.source_platform is None:
        raise ValueError(f"connection.source_platform: required to create the segments of audiences {to_create}, which have no "
                         "LinkedIn segment id (the sourcePlatform LinkedIn assigned to the integration)")
