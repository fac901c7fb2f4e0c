"""The platform's id of every audience a run sends to, before anything is sent.

An audience the config gives no id for (`connection.audience_ids`) is, on a platform whose API
creates audiences, looked up in the state store (where an earlier run recorded it), else found
on the platform by its name, else created there under that name; the id is recorded, so the next
run asks the platform nothing. The executors then send with the complete map.
"""
from __future__ import annotations

from audience_relay.connectors.destinations.connection import HttpConnection
from audience_relay.connectors.destinations.registry import REGISTRY
from audience_relay.connectors.state.store import StateStore
from audience_relay.pipeline.config import Destination
from audience_relay.pipeline.destinations import build_destination
from audience_relay.pipeline.logs import log_event


def with_platform_audience_ids(destination: Destination, store: StateStore, endpoint: str | None = None) -> Destination:
    """The destination with every audience's platform id in `connection.audience_ids`."""
    connection = destination.connection
    if not REGISTRY[destination.profile].creates_audiences or not isinstance(connection, HttpConnection):
        return destination
    missing = sorted(set(destination.audiences) - set(connection.audience_ids))
    if not missing:
        return destination
    ids, recorded, connector = dict(connection.audience_ids), store.audience_ids(destination.id), None
    try:
        for audience in missing:
            if audience not in recorded:
                if connector is None:
                    connector = build_destination(destination, endpoint)
                    connector.open()
                platform_id, created = connector.ensure_audience(connection.account_id, audience)
                recorded[audience] = store.record_audience_id(destination.id, audience, platform_id)
                log_event("deliver.audience_created" if created else "deliver.audience_found", destination=destination.id,
                          audience=audience, platform_audience_id=recorded[audience])
            ids[audience] = recorded[audience]
    finally:
        if connector is not None:
            connector.close()
    return destination.model_copy(update={"connection": connection.model_copy(update={"audience_ids": ids})})
