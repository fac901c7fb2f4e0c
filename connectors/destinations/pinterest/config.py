"""A Pinterest destination's `connection`, and what its customer lists need."""
from __future__ import annotations

import re

from audience_relay.connectors.destinations.connection import HttpConnection

DIGITS = re.compile(r"[0-9]{1,18}")


class PinterestConnection(HttpConnection):
    """`account_id` is the ad account id; `audience_ids` each audience's customer list id."""


def check_request_contract(destination) -> None:
    """A customer list holds one type of id, and Pinterest creates a list only with its first
    records (`records` is required on create), so each list is created once by hand and named here."""
    connection = destination.connection
    if connection is None or connection.account_id is None or not DIGITS.fullmatch(connection.account_id):
        raise ValueError("connection.account_id: the Pinterest ad account id (digits) is required")
    if len(destination.accepted_id_types) != 1:
        raise ValueError(f"id_types: a Pinterest customer list holds one type of id (EMAIL or MAID): give one, not "
                         f"{list(destination.accepted_id_types)}")
    missing = sorted(set(destination.audiences) - set(connection.audience_ids))
    if missing:
        raise ValueError(f"connection.audience_ids: audiences {missing} have no Pinterest customer list id; Pinterest creates a "
                         "list only with its first records: create it (list_type EMAIL or MAID) and give its id")
    for audience, list_id in sorted(connection.audience_ids.items()):
        if not DIGITS.fullmatch(list_id):
            raise ValueError(f"connection.audience_ids.{audience}: {list_id!r} is not a customer list id (digits)")
