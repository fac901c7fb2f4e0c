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
# The emulators' OAuth 2.0 token endpoints are plain http on loopback, which oauthlib refuses
# unless told (our own check still refuses http to anything but loopback).
os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")
# Jobs that tests start as processes (the demo, crashes, locks, the CLI, spark-submit) each start
# a JVM that lives for seconds on kilobytes: C1-only JIT and a serial collector cut their CPU by a
# third (a 4k-row prepare: 60 s -> 39 s). The tests' own session (the `spark` fixture) takes the
# same JVM options: its work is thousands of small queries, for which C2's compiler threads cost
# more than they win (six warm 2k-row prepares: 75 s, 85 s without). Two shuffle partitions, one
# per core of local[2], still split every shuffle in two (a warm 2k-row prepare: 6.3 s, 9 s with
# four). SPARK_SUBMIT_OPTS reaches every JVM spark-submit starts (pyspark starts its own through
# it too); pytest_configure adds the class archive (tests/spark_class_archive.py).
JOB_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
JOB_PROCESS_ENV = {
    "SPARK_SUBMIT_OPTS": JOB_JAVA_OPTIONS,
    "PYSPARK_SUBMIT_ARGS": "--conf spark.sql.shuffle.partitions=2 pyspark-shell",
}
for _name, _value in JOB_PROCESS_ENV.items():
    os.environ.setdefault(_name, _value)
CLASS_ARCHIVE = {"found": "not looked for"}


def pytest_configure(config) -> None:
    """The job JVMs' class archive, made by the main process before xdist starts its workers,
    which inherit its environment with the archive in it."""
    from tests import spark_class_archive

    if hasattr(config, "workerinput"):
        return
    if os.environ["SPARK_SUBMIT_OPTS"] != JOB_JAVA_OPTIONS:
        CLASS_ARCHIVE["found"] = "none: SPARK_SUBMIT_OPTS was set outside the tests"
        return
    archive, CLASS_ARCHIVE["found"] = spark_class_archive.make_archive(JOB_JAVA_OPTIONS)
    if archive:
        os.environ["SPARK_SUBMIT_OPTS"] = JOB_PROCESS_ENV["SPARK_SUBMIT_OPTS"] = spark_class_archive.using(JOB_JAVA_OPTIONS, archive)


def pytest_report_header(config) -> str:
    return f"job JVMs' class archive: {CLASS_ARCHIVE['found']}"


@pytest.fixture(scope="session")
def spark(moto_server):
    """Started after the moto server, so Spark's Python workers see its endpoint too."""
    from pyspark.sql import SparkSession

    from audience_relay.pipeline.session import TUNED_CONF

    job_submit_args = os.environ.pop("PYSPARK_SUBMIT_ARGS", None)   # its own settings are below
    builder = SparkSession.builder
    for key, value in TUNED_CONF.items():  # the settings the jobs run with
        builder = builder.config(key, value)
    session = (
        builder.master("local[2]")
        .appName("audience-relay-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    if job_submit_args is not None:
        os.environ["PYSPARK_SUBMIT_ARGS"] = job_submit_args
    yield session
    session.stop()


@pytest.fixture(scope="session")
def moto_server():
    """A moto server on loopback, with boto3 pointed at it through AWS_ENDPOINT_URL."""
    from audience_relay.testing.emulators.moto_server import start_moto_server

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
def postgres_server():
    """A PostgreSQL server on loopback (the run catalog's database in AWS is Aurora PostgreSQL)."""
    from audience_relay.testing.emulators.postgres_server import start_postgres_server

    server = start_postgres_server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 with generated host and client keys."""
    from audience_relay.testing.emulators.sftp_server import start_sftp_server

    server = start_sftp_server(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


# The longest files first: under `-n 2 --dist loadfile` a long file handed out last runs alone
# while the other worker idles (the demo did: 3 of the suite's 22 minutes).
LONGEST_FILES = [
    "tests/integration/test_demo.py",
    "tests/reliability/test_lock_takeover.py",
    "tests/reliability/test_bad_input.py",
    "tests/reliability/test_crash_resume.py",
    "tests/integration/test_run_command.py",
    "tests/integration/test_spark_submit.py",
    "tests/bench/test_deliver_bench.py",
    "tests/bench/test_prepare_bench.py",
]


def pytest_collection_modifyitems(items: list) -> None:
    def rank(item) -> int:
        path = item.nodeid.split("::")[0]
        return LONGEST_FILES.index(path) if path in LONGEST_FILES else len(LONGEST_FILES)

    items.sort(key=rank)  # stable: every other file keeps its order
