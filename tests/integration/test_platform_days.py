"""Day 1 and day 2 of generated data, prepared and delivered to every ad platform added through the
destination layout (one destination each, in one run), its audiences created on first delivery:
after each day, each platform's emulator holds exactly the members testing/reference.py computes
from the same input, independently of the Spark jobs; then `feedback` reads each platform's
report and finds every audience (the created ones by name). A day whose every batch each platform
refuses is dead-lettered, replayed through the CLI and delivered in full on the next run."""
import json
from collections import defaultdict
from contextlib import ExitStack

import boto3
import pyarrow.parquet as pq
import pytest
import yaml

from audience_relay.cli.main import main
from audience_relay.connectors.destinations.registry import REGISTRY
from audience_relay.pipeline.config import load_config
from audience_relay.pipeline.feedback_collect import collect
from audience_relay.pipeline.generator import GeneratorSpec, generate, spec_from_previous
from audience_relay.testing import reference
from audience_relay.testing.emulators.http_destination import HttpDestinationEmulator
from tests.integration.platforms import PLATFORMS as ALL_PLATFORMS
from tests.integration.platforms import emulator_config, secret

pytestmark = pytest.mark.integration

# One destination per platform. Where the API creates audiences, none has a platform id: deliver
# creates them all; Pinterest's lists are named by their ids (it creates a list only with records).
PLATFORMS = {profile: {"id": name, "connection": connection} for name, (profile, connection) in ALL_PLATFORMS.items()}
PLATFORMS["pinterest_customer_lists"] |= {"id_types": ["email"], "connection": PLATFORMS["pinterest_customer_lists"]["connection"] | {
    "audience_ids": {"high_value": "1001", "in_market": "1002"}}}
AUDIENCES = {"high_value": ["seg_0001", "seg_0002", "seg_0003"], "in_market": ["seg_0004", "seg_0005"]}
RECORDS = 3_000


def test_every_platform_beyond_meta_and_google_is_here():
    established = {"meta_custom_audiences", "google_data_manager"}
    assert set(PLATFORMS) == {name for name, d in REGISTRY.items() if d.profile.kind == "http_api"} - established


@pytest.fixture(scope="module")
def days(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("platform_days")
    ids = tuple(entry["id"] for entry in PLATFORMS.values())
    day1 = generate(spark, GeneratorSpec(records=RECORDS, seed=31, destinations=ids), root / "data" / "day1")
    day2 = generate(spark, spec_from_previous(root / "data" / "day1"), root / "data" / "day2")
    return root, {"d1": day1, "d2": day2}


def held_by_audience(emulator: HttpDestinationEmulator, configured: dict[str, str]) -> dict[str, set]:
    """What the emulator holds, by our audience: the created audiences carry our names, the others the config's ids."""
    names = {**{platform_id: audience for audience, platform_id in configured.items()}, **emulator.audiences}
    return {names[platform_id]: members for platform_id, members in emulator.score.held.items() if members}


def expected_by_audience(config, destination_id: str, day: dict) -> dict[str, set]:
    members, _ = reference.members(pq.read_table(day["membership"]).to_pylist(), pq.read_table(day["consent"]).to_pylist(), config)
    expected = defaultdict(set)
    for audience, id_type, key in members[destination_id]:
        expected[audience].add((id_type, key))
    return dict(expected)


@pytest.fixture
def emulators():
    """One running emulator per platform; each is shut down only once it serves (one never started would block it)."""
    running = {profile: HttpDestinationEmulator(emulator_config(profile)) for profile in PLATFORMS}
    with ExitStack() as stack:
        for emulator in running.values():
            stack.enter_context(emulator)
        yield running


def write_config(path, emulators: dict[str, HttpDestinationEmulator], secret_prefix: str):
    """A config of one mirror destination per platform, its secret in Secrets Manager (moto): Spark's
    workers resolve it where they send, as in AWS. Returns the loaded config and deliver's endpoints."""
    destinations = []
    for profile, emulator in emulators.items():
        entry = PLATFORMS[profile]
        arn = boto3.client("secretsmanager").create_secret(Name=f"{secret_prefix}/{entry['id']}", SecretString=secret(profile, emulator.url))["ARN"]
        destinations.append({"kind": "http_api", "profile": profile, "credentials": {"secret_arn": arn}, "sync_mode": "mirror",
                             "audiences": AUDIENCES, **entry})
    path.write_text(yaml.safe_dump({"version": 1, "destinations": destinations}))
    endpoints = [argument for profile, emulator in emulators.items() for argument in ("--endpoint", f"{PLATFORMS[profile]['id']}={emulator.url}")]
    return load_config(path), endpoints


def prepare_and_deliver(day: dict, out, config_path, run_id: str, endpoints: list[str], capsys) -> tuple[int, dict]:
    assert main(["prepare", "--input", day["membership"], "--consent", day["consent"], "--out", str(out),
                 "--config", str(config_path), "--run-id", run_id]) == 0
    return deliver(out, config_path, run_id, endpoints, capsys)


def deliver(out, config_path, run_id: str, endpoints: list[str], capsys) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["deliver", "--out", str(out), "--run-id", run_id, "--config", str(config_path), *endpoints])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def assert_each_platform_holds_the_reference(emulators, config, day: dict, run_id: str):
    for profile, emulator in emulators.items():
        expected = expected_by_audience(config, PLATFORMS[profile]["id"], day)
        assert set(expected) == set(AUDIENCES) and all(expected.values())
        configured = PLATFORMS[profile]["connection"].get("audience_ids", {})
        assert held_by_audience(emulator, configured) == expected, (run_id, profile)
        assert emulator.score.audiences_created == len(set(AUDIENCES) - set(configured)) and emulator.score.duplicates == 0


def test_each_platform_holds_exactly_the_reference_members_after_day_1_and_day_2(days, emulators, moto_server, capsys):
    root, data = days
    config_path = root / "destinations.yaml"
    config, endpoints = write_config(config_path, emulators, "audience-relay")
    for run_id, day in data.items():
        code, summary = prepare_and_deliver(day, root / "out", config_path, run_id, endpoints, capsys)
        assert code == 0 and summary["status"] == "SUCCEEDED", summary
        assert_each_platform_holds_the_reference(emulators, config, day, run_id)
    by_id = {PLATFORMS[profile]["id"]: emulator.url for profile, emulator in emulators.items()}
    assert collect(config, str(root / "out"), "d2", by_id) == {destination_id: len(AUDIENCES) for destination_id in by_id}
    for destination_id in by_id:
        part = json.loads((root / "out" / "runs" / "d2" / "feedback" / "parts" / f"{destination_id}.json").read_text())
        assert {row["audience_id"] for row in part} == set(AUDIENCES) and all(row["reported_size"] > 0 for row in part)


def test_a_day_every_platform_refuses_is_dead_lettered_and_replayed_through_the_cli_in_full(days, emulators, moto_server, capsys):
    root, data = days
    out, config_path = root / "replay-out", root / "replay.yaml"
    config, endpoints = write_config(config_path, emulators, "audience-relay-replay")
    for emulator in emulators.values():
        emulator.config.refuse_echoing = True   # every delivery a 400 quoting its entries, as the platforms do
    code, summary = prepare_and_deliver(data["d1"], out, config_path, "d1", endpoints, capsys)
    assert code == 1 and summary["status"] == "FAILED" and summary["dead_letters"] > 0, summary
    assert all(not report["snapshot_committed"] for report in summary["destinations"].values())
    assert all(not emulator.score.accepted and emulator.score.refused["invalid"] for emulator in emulators.values())

    capsys.readouterr()
    assert main(["dead-letters", "--out", str(out), "--run-id", "d1", "--replay"]) == 0
    replayed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(replayed) == summary["dead_letters"] and all(letter["replayed"] for letter in replayed)
    assert {letter["destination_id"] for letter in replayed} == {entry["id"] for entry in PLATFORMS.values()}

    for emulator in emulators.values():
        emulator.config.refuse_echoing = False
    code, summary = deliver(out, config_path, "d1", endpoints, capsys)
    assert code == 0 and summary["status"] == "SUCCEEDED" and summary["dead_letters"] == 0, summary
    assert all(report["snapshot_committed"] for report in summary["destinations"].values())
    # Every member once, and the audiences created on the refused run were used, not created again.
    assert_each_platform_holds_the_reference(emulators, config, data["d1"], "d1")
