"""A partner's SFTP drop: one gzip CSV file per batch, host keys always checked."""
from __future__ import annotations

from urllib.parse import urlparse

from audience_relay.connectors.destination import Destination
from audience_relay.connectors.destinations.sftp.config import SftpConnection
from audience_relay.connectors.destinations.sftp.profile import PROFILE
from audience_relay.connectors.destinations.shape import DestinationConfigError, DestinationType, UnsupportedDestination, credential


def connect(destination, endpoint: str | None = None) -> Destination:
    """`endpoint` is sftp://host:port of a local server."""
    # Imported when built: the feedback Lambda's zip has no paramiko.
    from audience_relay.connectors.destinations.sftp.client import KnownHostsError, SftpDestination

    if destination.connection is None:
        raise UnsupportedDestination(f"destination {destination.id}: connection (host, username, remote_dir, known_hosts) is required")
    connection = destination.connection
    host, port = connection.host, connection.port
    if endpoint:
        parsed = urlparse(endpoint)
        host, port = parsed.hostname or host, parsed.port or port
    try:
        return SftpDestination(host, connection.username, connection.remote_dir, connection.known_hosts, credential(destination), port=port)
    except KnownHostsError as error:
        raise DestinationConfigError(f"destination {destination.id}: connection.known_hosts: {error}") from None


DESTINATION = DestinationType(PROFILE, connect, SftpConnection)
