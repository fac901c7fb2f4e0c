"""Meta's published limits and identifier rules (Marketing API, Customer File Custom Audiences)."""
from __future__ import annotations

from audience_relay.connectors.profiles import PLAIN, SHA256, IdentifierRule, Profile

# Meta Marketing API, Customer File Custom Audiences: up to 10,000 records per request;
# EMAIL and PHONE SHA-256 of the normalized value (phone: digits with country code, no `+`);
# MADID lower-case with dashes, sent unhashed; EXTERN_ID hashing recommended.
PROFILE = Profile(
    name="meta_custom_audiences",
    kind="http_api",
    max_batch_size=10_000,
    identifiers={
        "email": SHA256,
        "phone": IdentifierRule(hash_sha256=True, phone_with_plus=False),
        "maid": PLAIN,
        "external_id": SHA256,
    },
    api_hosts=("graph.facebook.com",),
)
