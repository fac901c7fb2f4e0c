"""The control plane's Lambda behind API Gateway (REST API, Lambda proxy integration).

API Gateway has checked the caller's SigV4 signature (IAM authorization on every method) and the
source address (the API's resource policy) before the event arrives; the principal is the
caller's IAM ARN from the request context. Configured by REGISTRY_TABLE, CONFIG_URI (the jobs'
config file it republishes after each change), DESTINATION_MACHINE_ARN_PREFIX, WORK_BUCKET and
STATE_TABLE.
"""
from __future__ import annotations

import base64
import json
import logging
import os

from audience_relay.control.api import ControlPlane, Request, Response
from audience_relay.control.registry import DestinationRegistry
from audience_relay.control.runs import RunLocations, Runs

LOG = logging.getLogger("audience_relay.control")
_PLANE: ControlPlane | None = None   # one per Lambda container: clients are reused across requests


def _plane() -> ControlPlane:
    global _PLANE
    if _PLANE is None:
        locations = RunLocations(os.environ["DESTINATION_MACHINE_ARN_PREFIX"], os.environ["WORK_BUCKET"], os.environ["STATE_TABLE"])
        registry = DestinationRegistry(os.environ["REGISTRY_TABLE"], stage=os.environ["STAGE"])   # secrets bound to the stage
        _PLANE = ControlPlane(registry, Runs(locations), os.environ["CONFIG_URI"])
    return _PLANE


def request_from_event(event: dict) -> Request:
    """API Gateway's proxy event as a control plane request."""
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        body = base64.b64decode(body).decode("utf-8", "replace")
    identity = (event.get("requestContext") or {}).get("identity") or {}
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    return Request(event["httpMethod"], event["path"], body, headers, identity.get("userArn"))


def handler(event: dict, context: object) -> dict:
    request = request_from_event(event)
    try:
        response = _plane().handle(request)
    except Exception:  # noqa: BLE001 - the caller gets a JSON 500, the trace goes to the log
        LOG.exception(json.dumps({"event": "control.failed", "method": request.method, "path": request.path}))
        response = Response(500, {"error": "internal error; see the control plane's log"})
    LOG.info(json.dumps({"event": "control.request", "method": request.method, "path": request.path,
                         "status": response.status, "principal": request.principal}))
    return {"statusCode": response.status, "headers": {"Content-Type": "application/json"}, "body": response.text()}
