"""What a destination profile publishes: request limits and identifier rules.

A profile is data; each destination's is in its folder (connectors/destinations/<name>/profile.py)
and the registry (connectors/destinations/registry.py) lists them. A destination in the config names one and may tighten its limits, never
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
