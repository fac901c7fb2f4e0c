"""The control plane as a local HTTP server: the same `ControlPlane` the Lambda runs, behind the
same SigV4 check API Gateway makes (`control/auth.py`). `audience-relay control-plane`.

It listens on 127.0.0.1 unless told otherwise and logs one JSON line per request (method, path,
status, principal), never a body.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from audience_relay.control.api import MAX_BODY_BYTES, ControlPlane, Request, Response
from audience_relay.control.auth import Key, Unauthenticated, authenticate

LOG = logging.getLogger("audience_relay.control")


class ControlPlaneServer:
    """`with ControlPlaneServer(plane, keys, region) as server:` serves at `server.url`."""

    def __init__(self, plane: ControlPlane, keys: dict[str, Key], region: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = ThreadingHTTPServer((host, port), _handler(plane, keys, region))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> ControlPlaneServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def serve_forever(self) -> None:
        self._server.serve_forever()


def _handler(plane: ControlPlane, keys: dict[str, Key], region: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = self.headers.get("Content-Length") or "0"
            if not length.isdigit():
                self._answer(Response(400, {"error": "Content-Length must be a number of bytes"}), None)
                return
            length = int(length)
            if length > MAX_BODY_BYTES:
                self._answer(Response(413, {"error": f"the body is larger than {MAX_BODY_BYTES} bytes"}), None)
                return
            body = self.rfile.read(length)
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                principal = authenticate(self.command, f"http://{headers.get('host', '')}{self.path}", headers, body, keys, region)
            except Unauthenticated as refused:
                self._answer(Response(403, {"error": f"unauthenticated: {refused}"}), None)
                return
            path = self.path.split("?", 1)[0]
            try:
                response = plane.handle(Request(self.command, path, body.decode("utf-8", "replace"), headers, principal))
            except Exception:  # noqa: BLE001 - answered as API Gateway answers a failed Lambda, the trace logged
                LOG.exception(json.dumps({"event": "control.failed", "method": self.command, "path": path}))
                response = Response(500, {"error": "internal error; see the server's log"})
            self._answer(response, principal)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def _answer(self, response: Response, principal: str | None) -> None:
            payload = response.text().encode()
            self.send_response(response.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            LOG.info(json.dumps({"event": "control.request", "method": self.command, "path": self.path.split("?", 1)[0],
                                 "status": response.status, "principal": principal}))

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
            pass   # one JSON line per request instead (above)

    return Handler


def add_arguments(parser) -> None:
    parser.add_argument("--registry-table", "--registry_table", required=True, help="the destination registry (DynamoDB table)")
    parser.add_argument("--keys", required=True, help='JSON file {"<access key id>": {"secret": ..., "principal": ...}}')
    parser.add_argument("--region", default="us-east-1", help="the region requests are signed for (default us-east-1)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--machine-arn-prefix", "--machine_arn_prefix",
                        help="the stage's destination machines, e.g. arn:aws:states:R:A:stateMachine:audience-relay-dev-destination-; "
                             "with --work-bucket and --state-table, the server also starts runs and reports them")
    parser.add_argument("--work-bucket", "--work_bucket")
    parser.add_argument("--config-uri", "--config_uri", help="the jobs' config file (local or s3://), rewritten from the registry after each change")
    parser.add_argument("--state-table", "--state_table")
    parser.add_argument("--stage", help="the stage whose secrets destinations may name (audience-relay/<stage>/<id>); "
                                        "without it, any secret ARN is accepted (a local registry)")


def run_server(args) -> int:
    """`audience-relay control-plane`: serve until interrupted."""
    from audience_relay.control.auth import load_keys
    from audience_relay.control.registry import DestinationRegistry
    from audience_relay.control.runs import RunLocations, Runs

    stage = (args.machine_arn_prefix, args.work_bucket, args.state_table)
    if any(stage) and not all(stage):
        print("audience-relay control-plane: --machine-arn-prefix, --work-bucket and --state-table go together", file=sys.stderr)
        return 2
    runs = Runs(RunLocations(*stage)) if all(stage) else None
    plane = ControlPlane(DestinationRegistry(args.registry_table, stage=args.stage), runs, args.config_uri)
    server = ControlPlaneServer(plane, load_keys(args.keys), args.region, args.host, args.port)
    print(f"control plane on {server.url} (registry {args.registry_table}, SigV4 for {args.region}/execute-api)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
