"""Day 1 full load and day 2 delta on generated data, checked against testing/reference.py."""
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from audience_relay.pipeline import snapshots
from audience_relay.pipeline.config import DEFAULT_CONFIG, load_config
from audience_relay.pipeline.generator import GeneratorSpec, generate, spec_from_previous
from audience_relay.pipeline.prepare import PrepareRequest, run_prepare
from audience_relay.testing import reference

pytestmark = pytest.mark.integration


def read_rows(path: str) -> list[dict]:
    return pq.read_table(path).to_pylist()


def written_batches(run_dir: Path) -> dict:
    """{(destination, audience, op, batch_number): [(id_type, key), ...]} from the batch files."""
    table = pq.read_table(run_dir / "batches", partitioning="hive").to_pylist()
    batches = {}
    for row in table:
        key = (row["destination_id"], row["audience_id"], row["op"], row["batch_number"])
        batches.setdefault(key, []).append((row["id_type"], row["match_key"]))
    return batches


@pytest.fixture(scope="module")
def two_days(spark, tmp_path_factory):
    out = tmp_path_factory.mktemp("two_days")
    config = load_config(DEFAULT_CONFIG)
    day1 = generate(spark, GeneratorSpec(records=20_000, seed=7), out / "data" / "day1")
    day2 = generate(spark, spec_from_previous(out / "data" / "day1"), out / "data" / "day2")
    runs = {}
    for run_id, day in (("day1", day1), ("day2", day2)):
        request = PrepareRequest(
            input=day["membership"], consent=day["consent"], out=str(out), config=config,
            config_source=str(DEFAULT_CONFIG), run_id=run_id, sub_buckets=8,
        )
        summary = run_prepare(spark, request)
        runs[run_id] = json.loads(Path(summary["manifest"]).read_text())
        if run_id == "day1":
            for destination in config.active_destinations:
                snapshots.commit(str(out), run_id, destination.id, None)
    return out, config, day1, day2, runs


def expected_members(config, day):
    return reference.members(read_rows(day["membership"]), read_rows(day["consent"]), config)


def check_run(out, config, run_id, current, previous_keys, manifest, withdrawn=None):
    batches = written_batches(out / "runs" / run_id)
    for destination in config.active_destinations:
        expected = reference.delta(
            current[destination.id], previous_keys[destination.id], destination.sync_mode, destination.guards.min_audience_size,
            (withdrawn or {}).get(destination.id, frozenset()),
        )
        for op in ("add", "remove"):
            got = {
                (audience, id_type, key)
                for (d, audience, o, _), ids in batches.items()
                if d == destination.id and o == op
                for id_type, key in ids
            }
            assert got == expected[op], f"{run_id} {destination.id} {op}: {len(got ^ expected[op])} members differ"
        for (d, audience, op, number), ids in batches.items():
            if d == destination.id:
                assert len(ids) <= destination.batch_size
                assert len(set(ids)) == len(ids), "a member appears twice in one batch"
    listed = {(b["destination_id"], b["audience_id"], b["op"], b["batch_number"]): b["ids"] for b in manifest["batches"]}
    assert listed == {k: len(v) for k, v in batches.items()}


def test_day1_is_a_full_load_matching_the_reference(two_days):
    out, config, day1, _, runs = two_days
    current, _ = expected_members(config, day1)
    check_run(out, config, "day1", current, {d.id: set() for d in config.active_destinations}, runs["day1"])


def test_day2_sends_exactly_the_delta_against_the_committed_snapshot(two_days):
    out, config, day1, day2, runs = two_days
    previous, _ = expected_members(config, day1)
    current, _, withdrawn = reference.members_and_withdrawn(read_rows(day2["membership"]), read_rows(day2["consent"]), config)
    check_run(out, config, "day2", current, {d: set(keys) for d, keys in previous.items()}, runs["day2"], withdrawn)
    assert any(runs["day2"]["destinations"][d]["accounting"]["members"].get("remove") for d in ("meta_ads", "google_dm"))
    # upsert: only members whose consent was withdrawn are removed
    sftp_withdrawn = {k for k in withdrawn["partner_sftp"] if k in previous["partner_sftp"] and k not in current["partner_sftp"]}
    assert runs["day2"]["destinations"]["partner_sftp"]["accounting"]["members"].get("remove", 0) == len(sftp_withdrawn)


def test_accounting_reconciles_and_matches_the_reference(two_days):
    out, config, _, day2, runs = two_days
    _, expected = expected_members(config, day2)
    for destination in config.active_destinations:
        accounting = runs["day2"]["destinations"][destination.id]["accounting"]
        rows = accounting["rows"]
        assert accounting["reconciles"]
        assert sum(rows.values()) == accounting["input_rows"] == runs["day2"]["input_rows"]
        assert rows["consent_filtered"] == expected[destination.id]["consent_filtered"]
        assert rows["unmapped"] == expected[destination.id]["unmapped"]
        rejected = {k.split(":", 1)[1]: v for k, v in expected[destination.id].items() if k.startswith("rejected:")}
        assert accounting["rejected_by_reason"] == rejected
    assert sum(runs["day2"]["inputs"]["files"].values()) == runs["day2"]["input_rows"]


def test_rejected_rows_are_kept_with_their_reason(two_days):
    out, _, _, _, runs = two_days
    rejected = read_rows(str(out / "runs" / "day2" / "rejected"))
    assert Counter(r["reject_reason"] for r in rejected) == Counter(runs["day2"]["rejected"]["by_reason"])
    assert all(r["source_file"] for r in rejected)


def test_large_audiences_fill_their_batches(two_days):
    out, config, _, _, runs = two_days
    sizes = {d.id: d.batch_size for d in config.active_destinations}
    for (destination, audience, op, _), numbers in _groups(runs["day1"]["batches"]).items():
        full = [n for n in numbers[:-1]]
        assert all(ids == sizes[destination] for ids in full), f"{destination}/{audience}/{op} has a partial batch before its file's last"


def _groups(batch_list):
    groups = {}
    for b in sorted(batch_list, key=lambda b: b["batch_number"]):
        groups.setdefault((b["destination_id"], b["audience_id"], b["op"], b["file"]), []).append(b["ids"])
    return groups


def test_the_benchmarks_duckdb_peer_computes_what_prepare_computes(two_days, tmp_path):
    """bench/prepare.py compares our throughput with a DuckDB SQL pipeline: only fair if it does the same work."""
    from bench import prepare as bench

    out, _, day1, day2, _ = two_days
    days = {"day1": Path(day1["membership"]).parent, "day2": Path(day2["membership"]).parent}
    peer = bench.duckdb_peer(days, tmp_path / "duckdb", 2)
    for day in days:
        expected = bench.fingerprint(out / "runs" / day / "batches")
        assert expected and bench.fingerprint(peer[day][1]) == expected
    assert {op for _, _, op, *_ in bench.fingerprint(out / "runs" / "day2" / "batches")} == {"add", "remove"}   # a delta


def test_preparing_a_run_twice_is_refused(spark, two_days):
    from audience_relay.pipeline.prepare import PrepareError

    out, config, day1, _, _ = two_days
    request = PrepareRequest(input=day1["membership"], out=str(out), config=config, config_source="x", run_id="day1")
    with pytest.raises(PrepareError, match="already prepared"):
        run_prepare(spark, request)
