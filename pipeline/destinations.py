"""From a destination's config to a connector, inside whichever process delivers.

The config objects are picklable, so Spark ships them to executors and each worker builds
its own connector there; secrets are resolved at that moment and never travel in the plan.
"""
from __future__ import annotations

from urllib.parse import urlparse

from audience_relay.connectors.destination import Destination
from audience_relay.connectors.http.client import HttpApiDestination
from audience_relay.connectors.http.google import GoogleDataManager
from audience_relay.connectors.http.google_oauth import google_access_token
from audience_relay.connectors.http.meta import MetaCustomAudiences
from audience_relay.connectors.secrets import resolve_secret
from audience_relay.pipeline.config import ConfigError, HttpDestination, S3Destination as S3DestinationConfig, SftpDestination

SUPPORTED_KINDS = ("http_api", "s3", "sftp")


class UnsupportedDestination(ValueError):
    """The destination's kind or profile has no connector in this build."""


def _secret(destination) -> str:
    if destination.credentials is None:
        raise UnsupportedDestination(f"destination {destination.id}: `credentials` are required for {destination.kind}")
    return resolve_secret(destination.credentials.env, destination.credentials.secret_arn)


def _app_secret(connection) -> str | None:
    """Meta's app secret, when the config names one (the app requires appsecret_proof)."""
    secret = connection.app_secret if connection else None
    return resolve_secret(secret.env, secret.secret_arn) if secret else None


def build_destination(destination, endpoint: str | None = None) -> Destination:
    """The connector for one configured destination; `endpoint` overrides its URL (emulators)."""
    if isinstance(destination, HttpDestination):
        base_url = endpoint or (destination.connection and destination.connection.base_url)
        if not base_url:
            raise UnsupportedDestination(f"destination {destination.id}: connection.base_url is required")
        account = destination.connection.account_id if destination.connection else None
        profiles = {
            "meta_custom_audiences": lambda: MetaCustomAudiences(app_secret=_app_secret(destination.connection)),
            "google_data_manager": lambda: GoogleDataManager(
                operating_account_id=account or "",
                consent=destination.connection.consent.model_dump() if destination.connection and destination.connection.consent else None),
        }
        audience_ids = destination.connection.audience_ids if destination.connection else {}
        timeout = destination.connection.timeout_seconds if destination.connection else 30.0
        secret = _secret(destination)
        token = google_access_token(secret) if destination.profile == "google_data_manager" else secret
        return HttpApiDestination(base_url, profiles[destination.profile](), token=token, timeout_seconds=timeout, audience_ids=audience_ids)
    # The S3 and SFTP connectors are imported when built: the feedback Lambda asks HTTP
    # destinations only, and its zip has no paramiko.
    if isinstance(destination, S3DestinationConfig):
        from audience_relay.connectors.s3 import S3Destination

        if destination.connection is None:
            raise UnsupportedDestination(f"destination {destination.id}: connection.bucket is required")
        return S3Destination(destination.connection.bucket, destination.connection.prefix, destination.connection.kms_key_id)
    if isinstance(destination, SftpDestination):
        from audience_relay.connectors.sftp import KnownHostsError, SftpDestination as SftpConnector

        if destination.connection is None:
            raise UnsupportedDestination(f"destination {destination.id}: connection (host, username, remote_dir, known_hosts) is required")
        connection = destination.connection
        host, port = connection.host, connection.port
        if endpoint:  # sftp://host:port of a local server
            parsed = urlparse(endpoint)
            host, port = parsed.hostname or host, parsed.port or port
        try:
            return SftpConnector(host, connection.username, connection.remote_dir, connection.known_hosts, _secret(destination), port=port)
        except KnownHostsError as error:
            raise ConfigError(f"destination {destination.id}: connection.known_hosts: {error}") from None
    raise UnsupportedDestination(f"destination {destination.id}: no connector for kind {destination.kind!r}")
