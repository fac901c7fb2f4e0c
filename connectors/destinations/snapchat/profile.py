"""Snapchat's published limits and identifier rules (Marketing API, Snap Audience Match)."""
from __future__ import annotations

from audience_relay.connectors.profiles import SHA256, IdentifierRule, Profile

# Snap Marketing API: "Customer Lists" (segments, `/v1/segments/{id}/users`: EMAIL_SHA256,
# PHONE_SHA256, MOBILE_AD_ID_SHA256), "Rate Limits" (10 requests a second per access token; a
# 429 past it, no header), Conversions API "Best Practices" (normalization: emails trimmed and
# lower-cased; phones digits with the country code, no `+` or leading zeros; mobile ad ids
# lower-cased with dashes; all SHA-256 hex). 100,000 ids per request, as older Snap docs said
# (quoted by RudderStack's Snapchat Custom Audience destination). No daily quota is published.
PROFILE = Profile(
    name="snapchat_audience_match",
    kind="http_api",
    max_batch_size=100_000,
    identifiers={
        "email": SHA256,
        "phone": IdentifierRule(hash_sha256=True, phone_with_plus=False),
        "maid": SHA256,
    },
    requests_per_minute=600,
    api_hosts=("adsapi.snapchat.com",),
)
