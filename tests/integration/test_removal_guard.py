"""A partial input in mirror mode: one audience's segments are missing from the day's files.
Without a guard the run removes the whole audience at the destination. The removal guard holds
that audience's removals (its adds and the other audiences still go) until someone approves or
rejects them; what the destination holds is checked on the emulator, replayed in order."""
import copy
import json

import boto3
import pytest
import yaml
from pyspark.sql import functions as F

from audience_relay.cli.main import main
from audience_relay.pipeline.config import DEFAULT_CONFIG
from audience_relay.pipeline.generator import GeneratorSpec, generate, spec_from_previous
from audience_relay.testing.emulators.http_destination import EmulatorConfig, HttpDestinationEmulator

pytestmark = pytest.mark.integration

MISSING_SEGMENTS = ("seg_0006", "seg_0007", "seg_0008", "seg_0009")   # all of google_in_market
# The emulator holds each audience under the id it was sent as: Google's user list id.
LIST_IDS = next(d for d in yaml.safe_load(DEFAULT_CONFIG.read_text())["destinations"] if d["id"] == "google_dm")["connection"]["audience_ids"]
IN_MARKET, HIGH_VALUE = LIST_IDS["google_in_market"], LIST_IDS["google_high_value"]


@pytest.fixture(scope="module")
def days(spark, moto_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("guard")
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    (google,) = [d for d in raw["destinations"] if d["id"] == "google_dm"]
    secret = boto3.client("secretsmanager").create_secret(Name="audience-relay/guard-google", SecretString="google-token")
    google.update(credentials={"secret_arn": secret["ARN"]}, max_batch_size=200)
    raw["destinations"] = [google]
    config = root / "destinations.yaml"
    config.write_text(yaml.safe_dump(raw))
    day1 = generate(spark, GeneratorSpec(records=4_000, seed=8, user_churn=0.1, slot_churn=0.1), root / "day1")
    day2 = generate(spark, spec_from_previous(root / "day1"), root / "day2")
    partial = str(root / "day2-partial")
    spark.read.parquet(day2["membership"]).filter(~F.col("segment_id").isin(*MISSING_SEGMENTS)).write.parquet(partial)
    return root, config, day1, day2, partial


def _prepare(out, config, day, membership, run_id, capsys):
    capsys.readouterr()
    code = main(["prepare", "--input", membership, "--consent", day["consent"], "--out", str(out), "--config", str(config), "--run-id", run_id])
    return code, capsys.readouterr()


def _deliver(out, config, run_id, url, capsys):
    capsys.readouterr()
    code = main(["deliver", "--out", str(out), "--run-id", run_id, "--config", str(config), "--endpoint", f"google_dm={url}", "--workers", "1"])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _held_run(days, name, google, capsys):
    """Day 1 delivered and committed; then the partial day 2, prepared and delivered as far as it may."""
    root, config, day1, _, partial = days
    out = root / name
    assert _prepare(out, config, day1, day1["membership"], "r0", capsys)[0] == 0
    assert _deliver(out, config, "r0", google.url, capsys)[0] == 0
    day1_held = copy.deepcopy(dict(google.score.held))
    assert _prepare(out, config, day1, partial, "r1", capsys)[0] == 0
    code, summary = _deliver(out, config, "r1", google.url, capsys)
    return out, day1_held, code, summary


def test_removals_over_the_limit_are_held_while_adds_and_other_audiences_go_until_approved(days, capsys):
    root, config, day1, day2, partial = days
    with HttpDestinationEmulator(EmulatorConfig(requests_per_minute=6000)) as google:
        out, day1_held, code, summary = _held_run(days, "held", google, capsys)
        assert google.score.held[IN_MARKET] == day1_held[IN_MARKET], "the partial input emptied the audience"
        manifest = json.loads((out / "runs" / "r1" / "manifest.json").read_text())
        held = manifest["destinations"]["google_dm"]["removals_held"]
        assert set(held) == {"google_in_market"}
        numbers = held["google_in_market"]
        assert numbers["removes"] == numbers["committed_members"] == len(day1_held[IN_MARKET]) > 0
        assert numbers["max_remove_fraction"] == 0.5
        report = summary["destinations"]["google_dm"]
        assert code == 5 and summary["status"] == "REMOVALS_HELD" and not report["snapshot_committed"]
        assert report["removals_held"]["google_in_market"]["decision"] is None
        # The held audience keeps every member; the other audience got day 2's changes.
        assert google.score.held[IN_MARKET] == day1_held[IN_MARKET]
        assert google.score.held[HIGH_VALUE] != day1_held[HIGH_VALUE]

        # The report says what is held and that nobody decided yet.
        capsys.readouterr()
        assert main(["report", "--out", str(out), "--run-id", "r1"]) == 0
        printed = capsys.readouterr().out
        (line,) = [line for line in printed.splitlines() if "google_in_market" in line and "WAITING" in line]
        assert f"{numbers['removes']}" in line and "50% of committed" in line

        # No later run builds on a run whose removals nobody has decided on.
        code, printed = _prepare(out, config, day1, day2["membership"], "r2", capsys)
        assert code == 2 and "r1" in printed.err and "approve-removals" in printed.err

        # Approved: the held removals are sent and the run is committed.
        assert main(["approve-removals", "--out", str(out), "--run", "r1", "--destination", "google_dm", "--by", "ops@example.test"]) == 0
        code, summary = _deliver(out, config, "r1", google.url, capsys)
        report = summary["destinations"]["google_dm"]
        assert code == 0 and summary["status"] == "SUCCEEDED" and report["snapshot_committed"]
        assert report["removals_held"]["google_in_market"]["decision"] == "approved"
        assert not google.score.held.get(IN_MARKET)


def test_rejected_removals_stay_at_the_destination_and_the_next_run_builds_on_that(days, capsys):
    root, config, day1, day2, _ = days
    with HttpDestinationEmulator(EmulatorConfig(requests_per_minute=6000)) as google:
        out, day1_held, code, _ = _held_run(days, "rejected", google, capsys)
        assert code == 5
        assert main(["approve-removals", "--out", str(out), "--run", "r1", "--destination", "google_dm", "--audience", "google_in_market",
                     "--reject", "--by", "ops@example.test"]) == 0
        code, summary = _deliver(out, config, "r1", google.url, capsys)
        assert code == 0 and summary["destinations"]["google_dm"]["snapshot_committed"]
        assert google.score.held[IN_MARKET] == day1_held[IN_MARKET]
        # The full day 2 arrives: built on what the destination really holds, it ends as day 2.
        assert _prepare(out, config, day1, day2["membership"], "r2", capsys)[0] == 0
        assert _deliver(out, config, "r2", google.url, capsys)[0] == 0
        after_r2 = {a: m for a, m in google.score.held.items() if m}
    fresh = root / "fresh"
    with HttpDestinationEmulator(EmulatorConfig(requests_per_minute=6000)) as reference:
        assert _prepare(fresh, config, day1, day2["membership"], "only", capsys)[0] == 0
        assert _deliver(fresh, config, "only", reference.url, capsys)[0] == 0
        assert after_r2 == {a: m for a, m in reference.score.held.items() if m}


def test_a_consent_file_that_opts_out_far_more_users_than_the_last_run_stops_the_prepare(days, spark, capsys):
    """Consent withdrawals are never held by the removal guard (they must reach the destination),
    so a broken consent file (everyone opted out) would empty every audience. The quality gate
    compares the share of rows this run's consent filters with the last run's, per destination."""
    root, config, day1, day2, _ = days
    out = root / "consent-gate"
    assert _prepare(out, config, day1, day1["membership"], "r0", capsys)[0] == 0
    everyone = str(root / "consent-everyone")
    spark.read.parquet(day2["membership"]).select("user_id").where("user_id IS NOT NULL").distinct().selectExpr("user_id", "'*' AS scope").write.parquet(everyone)
    code, printed = _prepare(out, config, {"consent": everyone}, day2["membership"], "r1", capsys)
    assert code == 2, printed.err
    assert "google_dm" in printed.err and "opted out" in printed.err and "max_opt_out_increase" in printed.err
    assert not (out / "runs" / "r1" / "manifest.json").exists()
    # The day's own consent passes the same gate.
    assert _prepare(out, config, day2, day2["membership"], "r2", capsys)[0] == 0
