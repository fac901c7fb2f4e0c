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


@pytest.fixture(scope="session")
def moto_server():
    """A moto server on loopback, with boto3 pointed at it through AWS_ENDPOINT_URL."""
    from tests.emulators.moto_server import start_moto_server

    server = start_moto_server()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    yield server.endpoint
    server.stop()
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
