"""Google's published limits and identifier rules (Data Manager API, audience members ingest)."""
from __future__ import annotations

from audience_relay.connectors.profiles import PLAIN, SHA256, IdentifierRule, Profile

# Google Data Manager API, audience members ingest: 10,000 members per request, 300
# requests per minute and 100,000 per day per project; email lower-cased, intermediate
# whitespace removed, gmail.com/googlemail.com dots and `+tag` removed; phone E.164 with `+`;
# both SHA-256 hex. Mobile ids are sent as-is.
PROFILE = Profile(
    name="google_data_manager",
    kind="http_api",
    max_batch_size=10_000,
    identifiers={
        "email": IdentifierRule(hash_sha256=True, gmail_canonical=True),
        "phone": SHA256,
        "maid": PLAIN,
    },
    requests_per_minute=300,
    requests_per_day=100_000,
    quota_reset_timezone="America/Los_Angeles",  # Google API quotas reset at midnight Pacific
    api_hosts=("datamanager.googleapis.com", "googleads.googleapis.com"),   # ingest; audience reports (feedback)
)
