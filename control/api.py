"""The control plane's routes, as plain functions of a request: the Lambda behind API Gateway and
the local server (`control/server.py`) both call `ControlPlane.handle`.

Authentication happens before a request gets here (IAM/SigV4 at API Gateway, the same check in
the local server), and `handle` refuses a request without a principal all the same. Every answer
is JSON; a refused request says why, naming the field of the body it is about.

    GET  /destinations                  the registered destinations
    POST /destinations                  register one (body: its mapping, as in the YAML file)
    GET  /destinations/{id}
    PUT  /destinations/{id}             replace its mapping (If-Match: <version> guards concurrent changes)
    POST /destinations/{id}/pause       leave it out of the next fan-out
    POST /destinations/{id}/resume
    POST /destinations/{id}/runs        start its machine on an input (body: input, consent, optional run_id)
    GET  /destinations/{id}/runs/{run}  the run's status, executions, delivery summary and dead letters
    POST /destinations/{id}/runs/{run}/removals
                                        approve or reject the removals its guard held (body: decision
                                        "approved" or "rejected", optional audiences), then deliver again
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from audience_relay.control.errors import Invalid, RequestRefused
from audience_relay.control.registry import DestinationRegistry
from audience_relay.control.runs import Runs

MAX_BODY_BYTES = 256 * 1024
_DESTINATION = re.compile(r"^/destinations/([a-z0-9][a-z0-9_-]{0,31})(/pause|/resume|/runs)?(?:/([^/]+))?(/removals)?$")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)   # lower-case names
    principal: str | None = None   # who signed it, set by the authenticating layer


@dataclass(frozen=True)
class Response:
    status: int
    body: dict | list

    def text(self) -> str:
        return json.dumps(self.body, sort_keys=True)


def _error(status: int, message: str) -> Response:
    return Response(status, {"error": message})


class ControlPlane:
    def __init__(self, registry: DestinationRegistry, runs: Runs | None = None, config_uri: str | None = None) -> None:
        self.registry = registry
        self.runs = runs   # None: this server manages destinations only
        self.config_uri = config_uri   # the jobs' config file, rewritten after every change (None: not published)

    def _changed(self, response: Response) -> Response:
        if self.config_uri:
            self.registry.publish(self.config_uri)
        return response

    def handle(self, request: Request) -> Response:
        if not request.principal:
            return _error(403, "unauthenticated: sign the request with AWS Signature Version 4")
        path = request.path.rstrip("/") or "/"
        try:
            if path == "/destinations":
                if request.method == "GET":
                    return Response(200, [r.as_json() for r in self.registry.list()])
                if request.method == "POST":
                    return self._changed(Response(201, self.registry.register(_body(request), request.principal).as_json()))
                return _error(405, f"{request.method} {path}: use GET or POST")
            matched = _DESTINATION.match(path)
            if not matched:
                return _error(404, f"no route {request.method} {path}")
            destination_id, action, run_id, removals = matched.groups()
            if action == "/runs" or run_id:
                return self._runs(request, destination_id, action, run_id, removals is not None)
            if action:
                if request.method != "POST":
                    return _error(405, f"{request.method} {path}: use POST")
                return self._changed(Response(200, self.registry.set_active(destination_id, action == "/resume", request.principal).as_json()))
            if request.method == "GET":
                return Response(200, self.registry.get(destination_id).as_json())
            if request.method == "PUT":
                updated = self.registry.update(destination_id, _body(request), request.principal, _if_match(request))
                return self._changed(Response(200, updated.as_json()))
            return _error(405, f"{request.method} {path}: use GET or PUT")
        except RequestRefused as error:
            return _error(error.status, str(error))

    def _runs(self, request: Request, destination_id: str, action: str | None, run_id: str | None, removals: bool) -> Response:
        if action != "/runs" or (removals and run_id is None):
            return _error(404, f"no route {request.method} {request.path}")
        if self.runs is None:
            return _error(501, "runs are not served here: start the server with the stage's machines, work bucket and state table")
        destination = self.registry.get(destination_id)
        if run_id is None:
            if request.method != "POST":
                return _error(405, f"{request.method} {request.path}: use POST")
            return Response(202, self.runs.start(destination, _body(request)))
        if removals:
            if request.method != "POST":
                return _error(405, f"{request.method} {request.path}: use POST")
            return Response(202, self.runs.decide_removals(destination, run_id, _body(request), request.principal))
        if request.method != "GET":
            return _error(405, f"{request.method} {request.path}: use GET")
        return Response(200, self.runs.status(destination.id, run_id))


def _body(request: Request) -> object:
    if len(request.body.encode()) > MAX_BODY_BYTES:
        raise Invalid(f"the body is larger than {MAX_BODY_BYTES} bytes")
    if request.headers.get("content-type", "application/json").split(";")[0].strip() != "application/json":
        raise Invalid("Content-Type must be application/json")
    try:
        return json.loads(request.body or "null")
    except json.JSONDecodeError as error:
        raise Invalid(f"the body is not JSON: {error}") from None


def _if_match(request: Request) -> int | None:
    value = request.headers.get("if-match")
    if value is None:
        return None
    if not value.strip('"').isdigit():
        raise Invalid(f"If-Match: {value!r} is not a version number")
    return int(value.strip('"'))
