"""A Meta Custom Audiences destination's `connection`."""
from __future__ import annotations

from audience_relay.connectors.destinations.connection import Credentials, HttpConnection


class MetaConnection(HttpConnection):
    # The app's secret (`env` or `secret_arn`) when the app requires an appsecret_proof with every call.
    app_secret: Credentials | None = None
