"""moto server (a local AWS) as a child process on loopback, for tests and benchmarks.

Run as a script, this module is that server: moto's app with DynamoDB requests one at a time
(`orchestration.local.moto_app`), or quota and lease tests would test moto's race, not our
conditions.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

LOCAL_AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class MotoServer:
    endpoint: str
    process: subprocess.Popen

    @property
    def env(self) -> dict[str, str]:
        """What points boto3 (and child processes) at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, **LOCAL_AWS_ENV}

    def client(self, service: str):
        """A boto3 client of this server, without touching the process environment."""
        from audience_relay.connectors.aws import clients

        return clients.client(
            service, endpoint_url=self.endpoint, region_name=LOCAL_AWS_ENV["AWS_DEFAULT_REGION"],
            aws_access_key_id=LOCAL_AWS_ENV["AWS_ACCESS_KEY_ID"], aws_secret_access_key=LOCAL_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_moto_server(timeout_seconds: float = 30.0) -> MotoServer:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            return MotoServer(endpoint, process)
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"moto server did not start on {endpoint}")
            time.sleep(0.2)


def serve(port: int, host: str = "127.0.0.1") -> None:
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import run_simple

    from audience_relay.orchestration.local.moto_app import moto_app

    run_simple(host, port, moto_app(), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    serve(int(sys.argv[1]), *sys.argv[2:3])   # PORT [HOST]: the Docker Compose `moto` service binds 0.0.0.0
