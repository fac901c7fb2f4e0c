"""Job processes as platforms and users start them: spark-submit (as on EMR) and the installed console script."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from audience_relay.pipeline.generator import GeneratorSpec, generate

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_prepare_runs_under_spark_submit(spark, tmp_path):
    generate(spark, GeneratorSpec(records=2_000, seed=9, data_format="jsonl", compression="gzip"), tmp_path / "day1")
    spark_submit = Path(sys.executable).parent / "spark-submit"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    result = subprocess.run(
        [str(spark_submit), "--master", "local[2]", "--conf", "spark.ui.enabled=false", str(ROOT / "jobs" / "prepare.py"),
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


def test_deliver_runs_under_spark_submit(prepared_out, tmp_path):
    from audience_relay.testing.emulators.http_destination import HttpDestinationEmulator

    out = Path(shutil.copytree(prepared_out, tmp_path / "out"))
    spark_submit = Path(sys.executable).parent / "spark-submit"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable, "META_ACCESS_TOKEN": "t"}
    with HttpDestinationEmulator() as emulator:
        result = subprocess.run(
            [str(spark_submit), "--master", "local[2]", "--conf", "spark.ui.enabled=false", str(ROOT / "jobs" / "deliver.py"),
             "--out", str(out), "--run-id", "r1", "--destination", "meta_ads", "--endpoint", f"meta_ads={emulator.url}"],
            capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "SUCCEEDED" and summary["destinations"]["meta_ads"]["snapshot_committed"]
    assert len(emulator.score.accepted) == summary["destinations"]["meta_ads"]["batches"]["delivered"] > 0


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
