"""TikTok's published limits and identifier rules (Marketing API v1.3, audience segments)."""
from __future__ import annotations

from audience_relay.connectors.profiles import SHA256, Profile

# TikTok API for Business v1.3: "Segment mapping" (`/segment/mapping/`, as Segment's and
# RudderStack's TikTok Audiences destinations call it), "List of supported IDs and formats for a
# customer file" (SHA-256 of the normalized email; phone in E.164 with `+`, as both connectors
# hash it: TikTok's help pages have also said digits only, unconfirmed), "Rate limits v1.3" (the
# Basic tier: 600 requests a minute, 864,000 a day, the day in UTC). TikTok publishes no rows per
# mapping request; 1,000 is what the connectors send. MAIDs are not taken: TikTok needs the OS
# of each (IDFA_SHA256 or AAID_SHA256), which the data contract's `maid` does not carry.
PROFILE = Profile(
    name="tiktok_audiences",
    kind="http_api",
    max_batch_size=1_000,
    identifiers={"email": SHA256, "phone": SHA256},
    requests_per_minute=600,
    requests_per_day=864_000,
    quota_reset_timezone="UTC",
    api_hosts=("business-api.tiktok.com",),
)
