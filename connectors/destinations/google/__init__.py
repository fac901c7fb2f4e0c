"""Google Data Manager: audience members ingest, over the HTTP API engine, with OAuth 2.0 tokens."""
from __future__ import annotations

from audience_relay.connectors.destination import Destination
from audience_relay.connectors.destinations.google.config import GoogleConnection, check_request_contract
from audience_relay.connectors.destinations.google.profile import PROFILE
from audience_relay.connectors.destinations.shape import DestinationConfigError, DestinationType, http_api_destination
from audience_relay.connectors.secrets import resolve_secret


def connect(destination, endpoint: str | None = None) -> Destination:
    from audience_relay.connectors.destinations.google.client import GoogleDataManager
    from audience_relay.connectors.destinations.google.oauth import google_access_token

    connection = destination.connection

    def api() -> GoogleDataManager:
        return GoogleDataManager(operating_account_id=(connection.account_id if connection else None) or "",
                                 consent=connection.consent.model_dump() if connection and connection.consent else None)

    return http_api_destination(destination, endpoint, api, google_access_token)


def report_access(destination, endpoint: str | None = None) -> tuple[str, dict[str, str]]:
    """Google's audience reports come from the Google Ads API, with its developer token (and the
    manager account's id when the audiences are reached through one)."""
    from audience_relay.connectors.destinations.google.client import GOOGLE_ADS_API_VERSION

    connection = destination.connection
    if not endpoint and not connection.report_base_url:
        raise DestinationConfigError(f"destinations.{destination.id}.connection.report_base_url: Google's audience reports come from "
                                     f"the Google Ads API, not the Data Manager API: set it (https://googleads.googleapis.com/{GOOGLE_ADS_API_VERSION})")
    if connection.developer_token is None:
        raise DestinationConfigError(f"destinations.{destination.id}.connection.developer_token: the Google Ads API needs the "
                                     "developer token (env or secret_arn)")
    headers = {"developer-token": resolve_secret(connection.developer_token.env, connection.developer_token.secret_arn)}
    if connection.login_customer_id:
        headers["login-customer-id"] = connection.login_customer_id
    return endpoint or connection.report_base_url, headers


DESTINATION = DestinationType(PROFILE, connect, GoogleConnection, check_request_contract, report_access)
