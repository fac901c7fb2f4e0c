"""Runs of one destination that overlap: a run deferred half-way by the daily quota while the next
one is prepared. What the destination holds at the end is checked on the emulator's membership,
replayed in the order it accepted the requests."""
import copy
import json

import boto3
import pytest
import yaml

from audience_relay.cli.main import main
from audience_relay.pipeline.config import DEFAULT_CONFIG
from audience_relay.pipeline.generator import GeneratorSpec, generate, spec_from_previous
from audience_relay.testing.emulators.http_destination import EmulatorConfig, HttpDestinationEmulator

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def days(spark, moto_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("overlap")
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    (google,) = [d for d in raw["destinations"] if d["id"] == "google_dm"]
    secret = boto3.client("secretsmanager").create_secret(Name="audience-relay/overlap-google", SecretString="google-token")
    google.update(credentials={"secret_arn": secret["ARN"]}, max_batch_size=40)
    raw["destinations"] = [google]
    config = root / "destinations.yaml"
    config.write_text(yaml.safe_dump(raw))
    day1 = generate(spark, GeneratorSpec(records=4_000, seed=5, user_churn=0.2, slot_churn=0.2), root / "day1")
    day2 = generate(spark, spec_from_previous(root / "day1"), root / "day2")
    return root, config, day1, day2


def _prepare(root, config, day, run_id, capsys):
    capsys.readouterr()
    assert main(["prepare", "--input", day["membership"], "--consent", day["consent"], "--out", str(root / "out"),
                 "--config", str(config), "--run-id", run_id]) == 0
    return json.loads((root / "out" / "runs" / run_id / "manifest.json").read_text())


def _deliver(root, config, run_id, url, capsys):
    capsys.readouterr()
    code = main(["deliver", "--out", str(root / "out"), "--run-id", run_id, "--config", str(config),
                 "--endpoint", f"google_dm={url}", "--workers", "1"])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_a_run_prepared_while_another_is_half_delivered_waits_for_it_and_the_destination_ends_right(days, capsys):
    """r1 (day 2 against day 1) is deferred half-way; r2 restores day 1's membership. Prepared
    against day 1's snapshot, r2 would change nothing and r1's half of the changes would stay at
    the destination. r2 must build on r1 and send only after r1 is committed."""
    root, config, day1, day2 = days
    _prepare(root, config, day1, "r0", capsys)
    with HttpDestinationEmulator(EmulatorConfig(requests_per_minute=6000)) as google:
        assert _deliver(root, config, "r0", google.url, capsys)[0] == 0
        day1_held = copy.deepcopy(dict(google.score.held))

        r1 = _prepare(root, config, day2, "r1", capsys)
        r1_batches = [b for b in r1["batches"] if b["destination_id"] == "google_dm"]
        assert {b["op"] for b in r1_batches} == {"add", "remove"} and len(r1_batches) > 6
        google.config.requests_per_day = len(r1_batches) // 2  # counted from now
        code, first = _deliver(root, config, "r1", google.url, capsys)
        assert code == 3 and first["status"] == "QUOTA_DEFERRED"
        assert dict(google.score.held) != day1_held  # half of r1's changes are at the destination

        r2 = _prepare(root, config, day1, "r2", capsys)
        assert r2["destinations"]["google_dm"]["baseline_run_id"] == "r1"  # built on the run in flight
        google.next_day()
        google.config.requests_per_day = None
        accepted = sum(google.score.accepted.values())
        code, waiting = _deliver(root, config, "r2", google.url, capsys)
        report = waiting["destinations"]["google_dm"]
        assert code == 3 and waiting["status"] == "WAITING" and report["waiting_for"] == "r1"
        assert sum(google.score.accepted.values()) == accepted and report["sent_now"] == 0 and not report["snapshot_committed"]

        code, resumed = _deliver(root, config, "r1", google.url, capsys)
        assert code == 0 and resumed["destinations"]["google_dm"]["snapshot_committed"]
        code, last = _deliver(root, config, "r2", google.url, capsys)
        assert code == 0 and last["status"] == "SUCCEEDED" and last["destinations"]["google_dm"]["snapshot_committed"]
        held = {audience: members for audience, members in google.score.held.items() if members}
    assert held == {audience: members for audience, members in day1_held.items() if members}
    assert json.loads((root / "out" / "snapshots" / "google_dm.json").read_text())["run_id"] == "r2"
