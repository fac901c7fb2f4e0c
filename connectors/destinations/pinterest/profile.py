"""Pinterest's published limits and identifier rules (API v5, customer lists)."""
from __future__ import annotations

from audience_relay.connectors.profiles import SHA256, Profile

# Pinterest API v5 (its OpenAPI description, pinterest/api-description 5.23.0): customer lists
# (`PATCH /v5/ad_accounts/{id}/customer_lists/{id}`, `operation_type` ADD/REMOVE, `records` one
# comma-separated string; `list_type` EMAIL or MAID, one per list; emails lower-cased, SHA-256
# accepted; MAIDs hashed; no phone type), audiences (`size`), the OAuth token endpoint; "Rate
# limits" (`ads_write`: 400 requests a minute per user and app on Standard access). Pinterest
# publishes no records per request; 10,000 is what Tealium's connector sends.
PROFILE = Profile(
    name="pinterest_customer_lists",
    kind="http_api",
    max_batch_size=10_000,
    identifiers={"email": SHA256, "maid": SHA256},
    requests_per_minute=400,
    api_hosts=("api.pinterest.com",),
)
