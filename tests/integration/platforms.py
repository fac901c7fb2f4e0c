"""How the platform tests reach each ad platform's emulator: the credential its connector takes
(a fixed token, or an OAuth 2.0 refresh-token grant whose token endpoint is the emulator)."""
import json

from audience_relay.testing.emulators.http_destination import EmulatorConfig

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
        return json.dumps(dict(zip(("consumer_key", "consumer_secret", "access_token", "access_token_secret"), OAUTH1_KEYS)))
    return "platform-token"
