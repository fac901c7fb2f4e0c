"""The partner SFTP drop's limits and identifier rules."""
from __future__ import annotations

from audience_relay.connectors.profiles import SHA256, Profile

# A partner drop of gzip CSV files over SFTP: one file per batch, hashed ids only.
PROFILE = Profile(
    name="sftp_gzip_csv",
    kind="sftp",
    max_batch_size=1_000_000,
    identifiers={"email": SHA256, "phone": SHA256, "maid": SHA256, "external_id": SHA256},
)
