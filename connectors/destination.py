"""The interface every destination kind implements: open, send one batch, close, classify.

The delivery engine (`connectors.delivery`) owns rate limiting, quotas, retries and the
ledger; a destination only knows how to put one batch on the wire and what its failures mean.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from audience_relay.connectors.retry import Failure
from audience_relay.connectors.state.store import BatchRecord


@dataclass(frozen=True)
class Batch:
    """One request's worth of identifiers, with its ledger record (key, checksum, op)."""

    record: BatchRecord
    members: list[tuple[str, str]]  # (id_type, match_key), sorted
    load_error: str | None = None  # the batch file could not be read: the batch fails, nothing is sent
    # Members whose consent the input gave (ad_user_data, ad_personalization: "granted", "denied"
    # or None); empty when the destination's consent is fixed in its config, or it has none.
    member_consent: dict[tuple[str, str], tuple[str | None, str | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class Receipt:
    """What the destination said about an accepted batch (ids are never echoed)."""

    accepted: int
    detail: str = ""


class Destination(ABC):
    def __enter__(self) -> Destination:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:  # noqa: B027 - most destinations need no session
        """Connect or authenticate; called once per worker before the first batch."""

    def close(self) -> None:  # noqa: B027
        """Release connections; called once per worker after the last batch."""

    @abstractmethod
    def send(self, batch: Batch) -> Receipt:
        """Deliver the batch or raise; the same batch may be sent again after a failure."""

    @abstractmethod
    def classify(self, error: Exception) -> Failure:
        """Say whether a failure of `send` is retryable, rate-limited, quota or permanent."""
