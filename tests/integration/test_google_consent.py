"""Google consent read from input columns, two days: prepare -> deliver -> the Google emulator.

Day 1 (CSV) loads members whose rows say `granted`, `denied`, nothing, or something else (those
rows are rejected, kept with their value); day 2 (Parquet) changes some users' consent, drops
some rows, adds users and opts some out. After each day the emulator must hold exactly the
members, each with the consent, that testing/reference.py computes from the rows, and day 2 must
send again exactly the members that are new or whose consent changed.
"""
import csv
import json
import random

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from audience_relay.cli.main import main
from audience_relay.pipeline.config import DEFAULT_CONFIG, load_config
from audience_relay.testing import reference
from audience_relay.testing.emulators.http_destination import HttpDestinationEmulator

pytestmark = pytest.mark.integration

COLUMNS = ("user_id", "id_type", "id_value", "segment_id", "eea_data", "eea_ads")
SAID = ["granted", "denied", "", " Granted ", "DENIED", None, "granted", "granted"]
API = {"granted": "CONSENT_GRANTED", "denied": "CONSENT_DENIED", None: None}


def _rows(users: range, rng: random.Random) -> list[dict]:
    rows = []
    for n in users:
        id_type, value = ("email", f"user{n}@example.com") if n % 3 else ("phone", f"(415) 555-{n % 10000:04d}")
        for segment in rng.sample(["seg_0001", "seg_0002", "seg_0006", "seg_0010"], rng.choice([1, 1, 2])):
            rows.append({"user_id": f"u{n}", "id_type": id_type, "id_value": value, "segment_id": segment,
                         "eea_data": rng.choice(SAID), "eea_ads": rng.choice(SAID)})
    for row in rng.sample(rows, 6):
        row["eea_ads"] = "yes"   # neither granted nor denied: the row is rejected
    return rows


def _day2(day1: list[dict], rng: random.Random) -> list[dict]:
    kept = [dict(row) for row in day1 if row["eea_ads"] != "yes" and rng.random() > 0.1]
    for row in rng.sample(kept, len(kept) // 5):
        row["eea_data"], row["eea_ads"] = rng.choice(SAID), rng.choice(SAID)
    return kept + _rows(range(1000, 1060), rng)


def _write_csv(path, rows):
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


@pytest.fixture(scope="module")
def setup(moto_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("google_consent")
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    (google,) = [d for d in raw["destinations"] if d["id"] == "google_dm"]
    # A secret, not an environment variable: Spark's Python workers may predate this test's environment.
    secret = boto3.client("secretsmanager").create_secret(Name="audience-relay/google-consent-test", SecretString="ya29.test")
    google.update(credentials={"secret_arn": secret["ARN"]}, max_batch_size=150)
    google["connection"]["consent"] = {"ad_user_data": {"column": "eea_data"}, "ad_personalization": {"column": "eea_ads"}}
    raw["destinations"] = [google]
    config_path = root / "destinations.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    rng = random.Random(11)
    day1 = _rows(range(300), rng)
    day2 = _day2(day1, rng)
    opt_outs = [{"user_id": row["user_id"], "scope": "google_dm"} for row in rng.sample(day2, 8)]
    paths = {"day1": _write_csv(root / "day1.csv", day1), "day2": str(root / "day2.parquet"),
             "consent1": root / "consent1.csv", "consent2": root / "consent2.csv"}
    pq.write_table(pa.Table.from_pylist(day2), paths["day2"])
    paths["consent1"].write_text("user_id,scope\n")
    paths["consent2"].write_text("user_id,scope\n" + "".join(f"{o['user_id']},{o['scope']}\n" for o in opt_outs))
    return root, config_path, load_config(config_path), paths, {"day1": (day1, []), "day2": (day2, opt_outs)}


def _run(root, config_path, paths, day, url, capsys):
    consent = "consent1" if day == "day1" else "consent2"
    assert main(["prepare", "--input", paths[day], "--consent", str(paths[consent]), "--out", str(root / "out"),
                 "--config", str(config_path), "--run-id", day]) == 0
    capsys.readouterr()
    assert main(["deliver", "--out", str(root / "out"), "--run-id", day, "--config", str(config_path),
                 "--endpoint", f"google_dm={url}"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _expected(config, rows, opt_outs):
    """{user list id: {(id_type, key): (adUserData, adPersonalization)}} the emulator must hold."""
    (google,) = config.active_destinations
    consent = reference.member_consent(rows, opt_outs, config)["google_dm"]
    held = {}
    for (audience, id_type, key), signals in consent.items():
        held.setdefault(google.connection.audience_ids[audience], {})[(id_type, key)] = tuple(API[s] for s in signals)
    return held


def _held(emulator):
    return {audience: {member: emulator.score.consent[(audience, member)] for member in members}
            for audience, members in emulator.score.held.items() if members}


def test_each_member_reaches_google_with_the_consent_its_rows_give_and_a_change_is_sent_again(setup, capsys):
    root, config_path, config, paths, days = setup
    with HttpDestinationEmulator() as google:
        _run(root, config_path, paths, "day1", google.url, capsys)
        day1 = _expected(config, *days["day1"])
        assert _held(google) == day1
        assert {s for members in day1.values() for s in members.values()} >= {("CONSENT_GRANTED", "CONSENT_DENIED"), (None, None)}
        sent_before = {a: google.score.member_count[(a, "add")] for a in day1}

        summary = _run(root, config_path, paths, "day2", google.url, capsys)
        day2 = _expected(config, *days["day2"])
        assert _held(google) == day2
    # Sent again: the members that are new, and those held whose consent changed; no other.
    again = {a: sum(1 for m, s in members.items() if day1.get(a, {}).get(m) != s) for a, members in day2.items()}
    assert {a: google.score.member_count[(a, "add")] - sent_before.get(a, 0) for a in day2} == again
    changed = sum(1 for a, members in day2.items() for m, s in members.items() if m in day1.get(a, {}) and day1[a][m] != s)
    assert changed > 10 and summary["status"] == "SUCCEEDED"
    assert google.score.refused["invalid_consent"] == 0


def test_rows_with_a_consent_value_that_is_neither_are_rejected_with_it(setup):
    root, _, _, _, days = setup
    rejected = pq.read_table(root / "out" / "runs" / "day1" / "rejected").to_pylist()
    invalid = [r for r in rejected if r["reject_reason"] == "invalid_consent"]
    assert len(invalid) == 6 and {r["eea_ads"] for r in invalid} == {"yes"}
    assert {(r["user_id"], r["segment_id"]) for r in invalid} == {(r["user_id"], r["segment_id"]) for r in days["day1"][0] if r["eea_ads"] == "yes"}
    manifest = json.loads((root / "out" / "runs" / "day1" / "manifest.json").read_text())
    assert manifest["rejected"]["by_reason"]["invalid_consent"] == 6
