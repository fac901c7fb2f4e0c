"""From a destination's config to a connector, inside whichever process delivers.

The connector comes from the destination's folder, found in the registry by its profile
(connectors/destinations/registry.py). The config objects are picklable, so Spark ships them to
executors and each worker builds its own connector there; secrets are resolved at that moment
and never travel in the plan.
"""
from __future__ import annotations

from audience_relay.connectors.destination import Destination
from audience_relay.connectors.destinations.registry import REGISTRY
from audience_relay.connectors.destinations.shape import DestinationConfigError, UnsupportedDestination
from audience_relay.pipeline.config import ConfigError

SUPPORTED_KINDS = tuple(sorted({destination.profile.kind for destination in REGISTRY.values()}))


def build_destination(destination, endpoint: str | None = None) -> Destination:
    """The connector for one configured destination; `endpoint` overrides its URL (emulators)."""
    registered = REGISTRY.get(destination.profile)
    if registered is None:   # the config accepts only registered profiles, each with its kind
        raise UnsupportedDestination(f"destination {destination.id}: no connector for kind {destination.kind!r}")
    try:
        return registered.connect(destination, endpoint)
    except DestinationConfigError as error:
        raise ConfigError(str(error)) from None
