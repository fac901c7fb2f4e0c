"""The S3 drop's limits and identifier rules."""
from __future__ import annotations

from audience_relay.connectors.profiles import PLAIN, SHA256, Profile

# Objects in a partner's S3 bucket: one object per batch.
PROFILE = Profile(
    name="s3_objects",
    kind="s3",
    max_batch_size=5_000_000,
    identifiers={"email": SHA256, "phone": SHA256, "maid": PLAIN, "external_id": SHA256},
)
