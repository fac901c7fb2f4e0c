"""How the platform tests reach each ad platform's emulator: the credential its connector takes
(a fixed token, or an OAuth 2.0 refresh-token grant whose token endpoint is the emulator)."""
import json

from audience_relay.connectors.destinations.x.client import SECRET_FIELDS as X_SECRET_FIELDS
from audience_relay.testing.emulators.http_destination import EmulatorConfig

# The five ad platforms added through the destination layout, by a short name: profile and the
# connection their requests need (an account on each; audience ids left to each test).
PLATFORMS = {
    "tiktok": ("tiktok_audiences", {"base_url": "https://business-api.tiktok.com", "account_id": "700"}),
    "snap": ("snapchat_audience_match", {"base_url": "https://adsapi.snapchat.com", "account_id": "8adc3db7-8148-4fbf-999c-8d2266369d74"}),
    "linkedin": ("linkedin_dmp_segments", {"base_url": "https://api.linkedin.com", "account_id": "456", "source_platform": "ACME_CDP"}),
    "x": ("x_custom_audiences", {"base_url": "https://ads-api.x.com", "account_id": "18ce54d4x5t"}),
    "pinterest": ("pinterest_customer_lists", {"base_url": "https://api.pinterest.com", "account_id": "549755885175"}),
}
OAUTH2_CLIENT = ("client-id", "client-secret", "refresh-token")
OAUTH1_KEYS = ("consumer-key", "consumer-secret", "access-token", "access-token-secret")   # X
REFRESH_TOKEN_PLATFORMS = {"snapchat_audience_match", "linkedin_dmp_segments", "pinterest_customer_lists"}


def emulator_config(profile: str, **settings) -> EmulatorConfig:
    """The emulator's settings for a platform: with its token endpoint where the platform has one."""
    return EmulatorConfig(oauth2_client=OAUTH2_CLIENT if profile in REFRESH_TOKEN_PLATFORMS else None, oauth1_keys=OAUTH1_KEYS, **settings)


def secret(profile: str, emulator_url: str) -> str:
    """The destination's secret, as its connector reads it."""
    if profile in REFRESH_TOKEN_PLATFORMS:
        client_id, client_secret, refresh_token = OAUTH2_CLIENT
        return json.dumps({"client_id": client_id, "client_secret": client_secret, "refresh_token": refresh_token,
                           "token_url": f"{emulator_url}/oauth2/token"})
    if profile == "x_custom_audiences":
        return json.dumps(dict(zip(X_SECRET_FIELDS, OAUTH1_KEYS)))
    return "platform-token"
