"""Job processes as platforms and users start them: spark-submit against a standalone cluster whose
executors are JVMs of their own (as on EMR and Glue, where nothing the driver holds is in the
tasks' memory), and the installed console script."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from audience_relay.pipeline.generator import GeneratorSpec, generate
from audience_relay.testing.emulators.spark_cluster import standalone_cluster, submit_command

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A master and two one-core workers; yields the master's URL."""
    with standalone_cluster(tmp_path_factory.mktemp("cluster"), worker_memory="1g") as master_url:
        yield master_url


def test_prepare_runs_under_spark_submit_on_a_cluster(spark, cluster, tmp_path):
    generate(spark, GeneratorSpec(records=2_000, seed=9, data_format="jsonl", compression="gzip"), tmp_path / "day1")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    result = subprocess.run(
        [*submit_command(cluster), str(ROOT / "jobs" / "prepare.py"),
         "--input", str(tmp_path / "day1" / "membership"), "--consent", str(tmp_path / "day1" / "consent"),
         "--consent-format", "jsonl", "--out", str(tmp_path / "out"), "--run-id", "emr-step-1",
         "--config", str(ROOT / "examples" / "destinations.yaml")],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "PREPARED" and summary["run_id"] == "emr-step-1"
    manifest = json.loads(Path(summary["manifest"]).read_text())
    assert all(d["accounting"]["reconciles"] for d in manifest["destinations"].values())


@pytest.fixture(scope="module")
def prepared_out(spark, tmp_path_factory) -> Path:
    """One prepared run (meta_ads among its destinations); each deliver test sends a copy of it."""
    from audience_relay.cli.main import main

    root = tmp_path_factory.mktemp("prepared")
    generate(spark, GeneratorSpec(records=2_000, seed=4), root / "day1")
    assert main(["prepare", "--input", str(root / "day1" / "membership"), "--out", str(root / "out"), "--run-id", "r1"]) == 0
    return root / "out"


def test_deliver_runs_under_spark_submit_on_a_cluster(prepared_out, cluster, tmp_path, moto_server):
    """The executors send: they get the token and the ledger's AWS endpoint only as the job passes
    them (their workers started without either), and a cluster's ledger is DynamoDB."""
    from audience_relay.connectors.state.dynamodb import DynamoStateStore, create_table
    from audience_relay.testing.emulators.http_destination import HttpDestinationEmulator
    from audience_relay.testing.emulators.moto_server import LOCAL_AWS_ENV

    out = Path(shutil.copytree(prepared_out, tmp_path / "out"))
    create_table("cluster-delivery")
    executor_env = {"META_ACCESS_TOKEN": "t", "AWS_ENDPOINT_URL": moto_server, **LOCAL_AWS_ENV}
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable, **executor_env}
    with HttpDestinationEmulator() as emulator:
        result = subprocess.run(
            [*submit_command(cluster, executor_env=executor_env), str(ROOT / "jobs" / "deliver.py"),
             "--out", str(out), "--run-id", "r1", "--destination", "meta_ads", "--endpoint", f"meta_ads={emulator.url}",
             "--state", "dynamodb://cluster-delivery"],
            capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
        )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "SUCCEEDED" and summary["destinations"]["meta_ads"]["snapshot_committed"]
    ledger = DynamoStateStore("cluster-delivery").batches("r1", "meta_ads")
    assert {r.state.value for r in ledger} == {"delivered"}
    assert len(emulator.score.accepted) == len(ledger) == summary["destinations"]["meta_ads"]["batches"]["delivered"] > 0


def test_installed_console_script_delivers_from_any_folder_without_the_venv_on_path(prepared_out, tmp_path):
    """As cron, systemd or a CI step run it: Spark's Python workers must still find the package."""
    from audience_relay.testing.emulators.http_destination import HttpDestinationEmulator

    out = Path(shutil.copytree(prepared_out, tmp_path / "out"))
    venv_bin = Path(sys.executable).parent
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p).resolve() != venv_bin.resolve())
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    env.update(PATH=path, META_ACCESS_TOKEN="t")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # What makes the test mean something: the PATH's python3 cannot import the package.
    found = subprocess.run(["python3", "-c", "import audience_relay.jobs.deliver"], env=env, cwd=elsewhere, capture_output=True)
    assert found.returncode != 0
    with HttpDestinationEmulator() as emulator:
        result = subprocess.run(
            [str(venv_bin / "audience-relay"), "deliver", "--out", str(out), "--run-id", "r1", "--destination", "meta_ads",
             "--endpoint", f"meta_ads={emulator.url}"],
            capture_output=True, text=True, env=env, timeout=600, cwd=elsewhere,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "SUCCEEDED" and summary["destinations"]["meta_ads"]["snapshot_committed"]
    assert len(emulator.score.accepted) == summary["destinations"]["meta_ads"]["batches"]["delivered"] > 0
