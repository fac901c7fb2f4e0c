"""X's published limits and identifier rules (X Ads API v12, custom audiences)."""
from __future__ import annotations

from audience_relay.connectors.profiles import PLAIN, SHA256, Profile

# X Ads API: "Audiences API Reference" (Custom Audiences Users: `operation_type` Update/Delete,
# at most 2,500 operations and 5,000,000 bytes per request; 1,500 requests a minute per ad
# account), "Custom Audiences User Data" (SHA-256 hex of the lower-cased, trimmed email; device
# ids lower-cased then hashed; `partner_user_id` in clear), "Error codes and responses", "Rate
# limiting" (a 429 with `x-rate-limit-reset`, epoch seconds). No API page gives the phone's
# format: the business help page "Do Not Reach Lists" asks E.164 with `+`, as used here. One
# operation carries up to 10,000 users here: a batch of hashed ids stays far below 5 MB.
PROFILE = Profile(
    name="x_custom_audiences",
    kind="http_api",
    max_batch_size=10_000,
    identifiers={"email": SHA256, "phone": SHA256, "maid": SHA256, "external_id": PLAIN},
    requests_per_minute=1_500,
    api_hosts=("ads-api.x.com", "ads-api.twitter.com"),
)
