"""What each destination profile publishes: request limits and identifier rules.

A profile is data. A destination in the config names one and may tighten its limits, never
loosen them: the config loader rejects a `max_batch_size` above the profile's maximum.
"""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class IdentifierRule:
    """How one id type must look when it leaves for the destination."""

    hash_sha256: bool
    phone_with_plus: bool = True
    gmail_canonical: bool = False


@dataclass(frozen=True)
class Profile:
    name: str
    kind: str
    max_batch_size: int
    identifiers: dict[str, IdentifierRule]
    requests_per_minute: int | None = None
    requests_per_day: int | None = None
    quota_reset_timezone: str = "UTC"  # where the destination's "day" starts
    notes: tuple[str, ...] = field(default=())
    # The platform's API hosts: the control plane registers an HTTP destination only with a
    # `base_url` (and `report_base_url`) on one of them; another host needs a deploy.
    api_hosts: tuple[str, ...] = ()


SHA256 = IdentifierRule(hash_sha256=True)
PLAIN = IdentifierRule(hash_sha256=False)

PROFILES: dict[str, Profile] = {
    # Meta Marketing API, Customer File Custom Audiences: up to 10,000 records per request;
    # EMAIL and PHONE SHA-256 of the normalized value (phone: digits with country code, no `+`);
    # MADID lower-case with dashes, sent unhashed; EXTERN_ID hashing recommended.
    "meta_custom_audiences": Profile(
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
    ),
    # Google Data Manager API, audience members ingest: 10,000 members per request, 300
    # requests per minute and 100,000 per day per project; email lower-cased, intermediate
    # whitespace removed, gmail.com/googlemail.com dots and `+tag` removed; phone E.164 with `+`;
    # both SHA-256 hex. Mobile ids are sent as-is.
    "google_data_manager": Profile(
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
    ),
    # A partner drop of gzip CSV files over SFTP: one file per batch, hashed ids only.
    "sftp_gzip_csv": Profile(
        name="sftp_gzip_csv",
        kind="sftp",
        max_batch_size=1_000_000,
        identifiers={"email": SHA256, "phone": SHA256, "maid": SHA256, "external_id": SHA256},
    ),
    # Objects in a partner's S3 bucket: one object per batch.
    "s3_objects": Profile(
        name="s3_objects",
        kind="s3",
        max_batch_size=5_000_000,
        identifiers={"email": SHA256, "phone": SHA256, "maid": PLAIN, "external_id": SHA256},
    ),
}
