"""A partner's S3 bucket: one object per batch."""
from __future__ import annotations

from audience_relay.connectors.destination import Destination
from audience_relay.connectors.destinations.s3.config import S3Connection
from audience_relay.connectors.destinations.s3.profile import PROFILE
from audience_relay.connectors.destinations.shape import DestinationType, UnsupportedDestination


def connect(destination, endpoint: str | None = None) -> Destination:
    # Imported when built: the feedback Lambda asks HTTP destinations only.
    from audience_relay.connectors.destinations.s3.client import S3Destination

    if destination.connection is None:
        raise UnsupportedDestination(f"destination {destination.id}: connection.bucket is required")
    return S3Destination(destination.connection.bucket, destination.connection.prefix, destination.connection.kms_key_id)


DESTINATION = DestinationType(PROFILE, connect, S3Connection)
