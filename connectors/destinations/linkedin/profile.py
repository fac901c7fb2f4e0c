"""LinkedIn's published limits and identifier rules (Marketing API, Matched Audiences: DMP segments)."""
from __future__ import annotations

from audience_relay.connectors.profiles import PLAIN, SHA256, Profile

# LinkedIn Marketing API: "DMP Segment Users" (`/rest/dmpSegments/{id}/users`, BATCH_CREATE;
# SHA256_EMAIL: SHA-256 hex of the lower-cased, trimmed email; GOOGLE_AID in clear; no phone
# type; 600 requests a minute per member, daily limits per application shown in its developer
# portal, a 429 past them), "DMP Segments" (create, find by account), "DMP Segment
# Destinations" (audienceSize), "Rate Limits". LinkedIn publishes no elements per request;
# 5,000 is what the Segment and RudderStack connectors send. Company lists (`/companies`) need
# company names or domains, which the data contract does not hold: users only.
PROFILE = Profile(
    name="linkedin_dmp_segments",
    kind="http_api",
    max_batch_size=5_000,
    identifiers={"email": SHA256, "maid": PLAIN},
    requests_per_minute=600,
    api_hosts=("api.linkedin.com",),
)
