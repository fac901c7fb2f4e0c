"""The run catalog's Lambda: the schema's migrations and a run's record, from inside the catalog's VPC.

Aurora sits in private subnets, so what writes to it runs there too. Deploy invokes this with
`{"action": "migrate"}` after the stacks (the migrations ship in the package); the scheduler,
with `{"action": "record", "run_id"}` once every destination of the run has ended. Configured
by WORK_BUCKET and the catalog's settings (connectors/catalog/source.py: the DSN is built from
the RDS-managed secret at each call, since RDS rotates it). An error leaves the function as its
type: `CatalogError` when the database cannot be reached, which the scheduler retries.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping

from audience_relay.connectors.catalog.source import CatalogSource, CatalogSourceError
from audience_relay.pipeline.paths import RUN_ID
from audience_relay.report.catalog import CatalogUsageError, record_run

LOG = logging.getLogger("audience_relay.catalog")
LOG.setLevel(logging.INFO)


def handle(event: dict, environ: Mapping[str, str], secrets_client) -> dict:
    from audience_relay.connectors.catalog.postgres import migrate

    source = CatalogSource.from_environment(environ)
    if source is None:
        raise CatalogSourceError("no run catalog configured: set CATALOG_SECRET_ARN and CATALOG_HOST, or CATALOG_DSN")
    action = event.get("action")
    if action == "migrate":
        result = {"applied": migrate(source.resolve(secrets_client))}
    elif action == "record":
        run_id = event.get("run_id")
        if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
            raise CatalogUsageError(f"run_id: {run_id!r} must match {RUN_ID.pattern}")
        result = record_run(source.resolve(secrets_client), f"s3://{environ['WORK_BUCKET']}", run_id)
    else:
        raise CatalogUsageError(f"action: {action!r} is neither 'migrate' nor 'record'")
    LOG.info(json.dumps({"event": f"catalog.{action}", **result}))
    return result


def handler(event: dict, context: object) -> dict:
    from audience_relay.connectors.aws import secretsmanager

    return handle(event, os.environ, secretsmanager.client())
