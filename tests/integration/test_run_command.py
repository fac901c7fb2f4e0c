"""`audience-relay run`: the rendered machines executed locally with the real job scripts."""
import json

import pytest
import yaml

from audience_relay.cli.main import main
from audience_relay.pipeline.generator import GeneratorSpec, generate
from audience_relay.testing.emulators.http_destination import EmulatorConfig, HttpDestinationEmulator

pytestmark = pytest.mark.integration


def _config(path, base_url):
    path.write_text(yaml.safe_dump({"version": 1, "destinations": [{
        "id": "meta_ads", "kind": "http_api", "profile": "meta_custom_audiences", "id_types": ["email", "phone", "maid"],
        "max_batch_size": 500, "rate_limit": {"requests_per_minute": 6000}, "credentials": {"env": "META_ACCESS_TOKEN"},
        "connection": {"base_url": base_url, "account_id": "act_1"},
        "audiences": {"meta_high_value": ["seg_0001", "seg_0002", "seg_0003"]},
    }]}))
    return path


@pytest.fixture(scope="module")
def day(spark, tmp_path_factory):
    return generate(spark, GeneratorSpec(records=3000, destinations=("meta_ads",)), tmp_path_factory.mktemp("data") / "day1")


def test_run_executes_a_destination_machine_that_prepares_and_delivers(day, tmp_path, capsys):
    with HttpDestinationEmulator(EmulatorConfig(max_batch=500)) as emulator:
        code = main(["run", "--destination", "meta_ads", "--config", str(_config(tmp_path / "d.yaml", emulator.url)),
                     "--input", day["membership"], "--consent", day["consent"], "--out", str(tmp_path / "out"), "--run-id", "r1"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "destination-meta_ads" in printed and "Prepare > MarkPrepared > AcquireLease > Deliver > ReadSummary" in printed
    summary = json.loads((tmp_path / "out" / "runs" / "r1" / "delivery" / "meta_ads" / "summary.json").read_text())
    assert summary["status"] == "SUCCEEDED" and summary["accounting"]["reconciles"]
    assert summary["batches"]["delivered"] == len(emulator.score.accepted) > 0 and emulator.score.duplicates == 0
    manifest = json.loads((tmp_path / "out" / "runs" / "r1" / "manifest.json").read_text())
    assert list(manifest["destinations"]) == ["meta_ads"]


def test_a_failing_prepare_job_fails_the_run_naming_the_phase_and_alerting(day, tmp_path, capsys):
    code = main(["run", "--destination", "meta_ads", "--config", str(_config(tmp_path / "d.yaml", "http://127.0.0.1:9")),
                 "--input", str(tmp_path / "no-such-input"), "--consent", day["consent"], "--out", str(tmp_path / "out"),
                 "--run-id", "r2", "--retry-scale", "0"])
    printed = capsys.readouterr().out
    assert code == 1
    assert "destination-meta_ads       FAILED" in printed and "PrepareFailed" in printed
    assert "no-such-input" in printed  # the job's own error, from its log
    assert "ALERT audience-relay meta_ads: delivery lifecycle failed: phase Prepare" in printed
    assert "local jobs run: " + ", ".join(["audience-relay-prepare"] * 4) + " " in printed  # 1 + 3 retries, no deliver
