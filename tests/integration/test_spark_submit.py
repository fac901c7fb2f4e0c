"""The prepare job runs unchanged as a spark-submit application (as on EMR)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.generate import GeneratorSpec, generate

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


def test_deliver_runs_under_spark_submit(spark, tmp_path):
    from jobs.cli import main
    from tests.emulators.http_destination import HttpDestinationEmulator

    generate(spark, GeneratorSpec(records=2_000, seed=4), tmp_path / "day1")
    out = tmp_path / "out"
    assert main(["prepare", "--input", str(tmp_path / "day1" / "membership"), "--out", str(out), "--run-id", "r1"]) == 0
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
