import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
# Spark's Python workers inherit the environment the JVM started with: credentials that
# delivery tests resolve inside workers must be set before the session exists.
os.environ.setdefault("META_ACCESS_TOKEN", "test-meta-token")


@pytest.fixture(scope="session")
def spark(moto_server):
    """Started after the moto server, so Spark's Python workers see its endpoint too."""
    from pyspark.sql import SparkSession

    from jobs.session import TUNED_CONF

    builder = SparkSession.builder
    for key, value in TUNED_CONF.items():  # the settings the jobs run with
        builder = builder.config(key, value)
    session = (
        builder.master("local[2]")
        .appName("audience-relay-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server():
    """A moto server on loopback, with boto3 pointed at it through AWS_ENDPOINT_URL."""
    import subprocess
    import time
    import urllib.request

    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("moto server did not start")
            time.sleep(0.2)
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    yield endpoint
    process.terminate()
    process.wait(timeout=10)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 with generated host and client keys."""
    from tests.emulators.sftp_server import start_sftp_server

    server = start_sftp_server(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()
