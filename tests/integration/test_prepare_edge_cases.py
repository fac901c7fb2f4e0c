"""prepare on small hand-written inputs: numeric audience ids, empty destinations, no changes."""
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from audience_relay.pipeline import snapshots
from audience_relay.pipeline.config import parse_config
from audience_relay.pipeline.prepare import PrepareError, PrepareRequest, run_prepare

pytestmark = pytest.mark.integration

CONFIG = {
    "version": 1,
    "quality": {"row_count_band": None, "max_rejected_fraction": 0.9},
    "destinations": [
        {"id": "meta_ads", "kind": "http_api", "profile": "meta_custom_audiences", "id_types": ["email"],
         "audiences": {"00042": ["seg_a"], "23851234567890123": ["seg_b"]}},
        {"id": "quiet", "kind": "http_api", "profile": "google_data_manager", "id_types": ["email"],
         "connection": {"base_url": "https://datamanager.googleapis.com", "account_id": "1234567890", "audience_ids": {"nobody": "5550009"}},
         "audiences": {"nobody": ["seg_none"]}},
    ],
}


def write_input(path: Path, rows: list[tuple]) -> str:
    path.write_text("user_id,id_type,id_value,segment_id\n" + "".join(",".join(r) + "\n" for r in rows))
    return str(path)


def prepare(spark, tmp_path, run_id, rows, consent=None):
    request = PrepareRequest(
        input=write_input(tmp_path / f"{run_id}.csv", rows), out=str(tmp_path / "out"),
        config=parse_config(CONFIG, "test.yaml"), config_source="test.yaml", run_id=run_id, consent=consent,
    )
    summary = run_prepare(spark, request)
    return json.loads(Path(summary["manifest"]).read_text())


ROWS = [("u1", "email", "a@x.com", "seg_a"), ("u2", "email", "b@x.com", "seg_b"), ("u3", "maid", "AECE52E7-03EE-455A-B3C4-E57283966239", "seg_a")]


def test_numeric_audience_ids_stay_strings_and_empty_destinations_survive_the_next_run(spark, tmp_path):
    first = prepare(spark, tmp_path, "r1", ROWS)
    assert {b["audience_id"] for b in first["batches"]} == {"00042", "23851234567890123"}
    assert first["destinations"]["meta_ads"]["audiences"]["00042"]["batches"] == {"add": 1, "remove": 0}
    assert first["destinations"]["quiet"]["batches"] == 0
    for destination in ("meta_ads", "quiet"):
        snapshots.commit(str(tmp_path / "out"), "r1", destination, None)
    second = prepare(spark, tmp_path, "r2", ROWS)  # same input: nothing to send
    assert second["batches"] == [] and (tmp_path / "out" / "runs" / "r2" / "batches").is_dir()
    assert second["destinations"]["meta_ads"]["accounting"]["members"] == {"unchanged": 2}


def test_rows_of_an_id_type_no_destination_takes_are_rejected_with_their_reason(spark, tmp_path):
    manifest = prepare(spark, tmp_path, "r1", ROWS)
    assert manifest["rejected"]["by_reason"] == {"id_type_not_accepted": 1}
    rejected = pq.read_table(tmp_path / "out" / "runs" / "r1" / "rejected").to_pylist()
    assert [(r["user_id"], r["reject_reason"]) for r in rejected] == [("u3", "id_type_not_accepted")]


def test_sub_buckets_below_one_are_refused_before_reading(spark, tmp_path):
    request = PrepareRequest(input="/nonexistent", out=str(tmp_path), config=parse_config(CONFIG, "t"), config_source="t",
                             run_id="r1", sub_buckets=0)
    with pytest.raises(PrepareError, match="--sub-buckets"):
        run_prepare(spark, request)


def test_a_finished_run_is_refused_again_unless_the_caller_asks_to_skip_it(spark, tmp_path):
    from dataclasses import replace

    import pytest

    from audience_relay.pipeline.prepare import PrepareError

    prepare(spark, tmp_path, "r1", ROWS)
    request = PrepareRequest(input=str(tmp_path / "r1.csv"), out=str(tmp_path / "out"), config=parse_config(CONFIG, "test.yaml"),
                             config_source="test.yaml", run_id="r1")
    with pytest.raises(PrepareError, match="already prepared"):
        run_prepare(spark, request)
    skipped = run_prepare(spark, replace(request, if_prepared="skip"))
    assert skipped == {"status": "ALREADY_PREPARED", "run_id": "r1", "destinations": ["meta_ads", "quiet"]}


def test_consent_for_a_destination_not_configured_is_counted_and_the_configured_opt_outs_still_apply(spark, tmp_path):
    consent = tmp_path / "consent.csv"
    consent.write_text("user_id,scope\nu1,meta_ads\nu2,google_dm\nu2,google_dm\nu3,retired_dsp\n")
    manifest = prepare(spark, tmp_path, "r1", ROWS + [("u4", "email", "d@x.com", "seg_a")], consent=str(consent))
    assert manifest["consent"] == {"unknown_scopes": {"google_dm": 2, "retired_dsp": 1}}
    meta = manifest["destinations"]["meta_ads"]["accounting"]
    assert meta["rows"]["consent_filtered"] == 1 and meta["reconciles"]   # u1's opt-out is honoured
    assert meta["members"] == {"add": 2}   # u2 (opted out of google_dm only) and u4


def test_rows_lost_after_the_consent_step_make_the_accounting_fail_instead_of_passing_as_consent(spark, tmp_path, monkeypatch):
    """A mutation: rows vanish between the consent filter and the members (a bad join, a
    filter). Counted as what is left over, they would pass as consent-filtered; counted from
    the data, the sum falls short and the run stops."""
    from audience_relay.pipeline import prepare as prepare_module
    from pyspark.sql import functions as F

    consent = tmp_path / "consent.csv"
    consent.write_text("user_id,scope\nu1,meta_ads\n")
    to_members = prepare_module.to_members
    monkeypatch.setattr(prepare_module, "to_members", lambda rows: to_members(rows.filter(F.col("user_id") != "u2")))
    with pytest.raises(RuntimeError, match=r"accounting of meta_ads does not reconcile"):
        prepare(spark, tmp_path, "mutated", ROWS, consent=str(consent))
    monkeypatch.setattr(prepare_module, "to_members", to_members)
    meta = prepare(spark, tmp_path, "intact", ROWS, consent=str(consent))["destinations"]["meta_ads"]["accounting"]
    assert meta["rows"]["consent_filtered"] == 1 and meta["reconciles"]


def test_a_withdrawn_consent_removes_the_member_from_upsert_and_guarded_audiences(spark, tmp_path):
    """Upsert mode never removes a member who left, and a guarded audience sends nothing; a
    withdrawn consent is neither: it removes the member wherever it was delivered."""
    import copy

    raw = copy.deepcopy(CONFIG)
    raw["quality"]["max_opt_out_increase"] = None   # one user of two opts out: the consent gate would stop it
    raw["destinations"] = [
        {"id": "upserted", "kind": "http_api", "profile": "meta_custom_audiences", "id_types": ["email"], "sync_mode": "upsert",
         "audiences": {"aud_a": ["seg_a"]}},
        {"id": "guarded", "kind": "http_api", "profile": "meta_custom_audiences", "id_types": ["email"],
         "guards": {"min_audience_size": 2}, "audiences": {"aud_b": ["seg_b"]}},
    ]
    config = parse_config(raw, "test.yaml")
    rows = [("u1", "email", "a@x.com", "seg_a"), ("u2", "email", "b@x.com", "seg_a"),
            ("u1", "email", "a@x.com", "seg_b"), ("u3", "email", "c@x.com", "seg_b")]

    def run(run_id, consent=None):
        request = PrepareRequest(input=write_input(tmp_path / f"{run_id}.csv", rows), out=str(tmp_path / "out"), config=config,
                                 config_source="test.yaml", run_id=run_id, consent=consent)
        return json.loads(Path(run_prepare(spark, request)["manifest"]).read_text())

    run("r1")
    for destination in ("upserted", "guarded"):
        snapshots.commit(str(tmp_path / "out"), "r1", destination, None)
    consent = tmp_path / "consent.csv"
    consent.write_text("user_id,scope\nu1,*\n")
    second = run("r2", str(consent))
    removes = {(b["destination_id"], b["op"]): b["ids"] for b in second["batches"] if b["op"] == "remove"}
    assert removes == {("upserted", "remove"): 1, ("guarded", "remove"): 1}
    assert second["destinations"]["upserted"]["accounting"]["members"] == {"remove": 1, "unchanged": 1}
    snapshot = pq.read_table(tmp_path / "out" / "runs" / "r2" / "snapshot").to_pylist()
    assert len(snapshot) == 2   # u2 and u3 stay; u1's two memberships are gone


def test_a_folder_is_read_only_once_its_completion_marker_is_there(spark, tmp_path):
    """A writer still adding files: in mirror mode the members of the files not yet written
    would be removed. Every trigger goes through prepare, so prepare refuses the folder until
    its `_SUCCESS` is there; the flag reads it anyway and says so in the manifest."""
    from audience_relay.cli.main import main
    import yaml

    folder = tmp_path / "landing"
    folder.mkdir()
    write_input(folder / "part-00000.csv", ROWS)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    arguments = ["prepare", "--input", str(folder), "--out", str(tmp_path / "out"), "--config", str(config)]
    assert main([*arguments, "--run-id", "early"]) == 2
    assert not (tmp_path / "out" / "runs" / "early" / "manifest.json").exists()
    assert main([*arguments, "--run-id", "forced", "--without-completion-marker"]) == 0
    assert json.loads((tmp_path / "out" / "runs" / "forced" / "manifest.json").read_text())["inputs"]["completion_marker"] == "not required"
    (folder / "_SUCCESS").write_text("")
    assert main([*arguments, "--run-id", "complete"]) == 0
    assert json.loads((tmp_path / "out" / "runs" / "complete" / "manifest.json").read_text())["inputs"]["completion_marker"] == "_SUCCESS"


def test_a_committed_snapshot_outlives_its_run_folder_and_a_damaged_one_stops_prepare(spark, tmp_path):
    """The work bucket expires `runs/` after RunRetentionDays; a destination paused longer must
    still find its baseline. A committed snapshot whose listed files are not all there stops
    prepare naming the file, instead of a delta against part of what the destination holds."""
    import shutil

    out = tmp_path / "out"
    prepare(spark, tmp_path, "r1", ROWS)
    for destination in ("meta_ads", "quiet"):
        snapshots.commit(str(out), "r1", destination, None)
    shutil.rmtree(out / "runs" / "r1")   # what the lifecycle rule does after 90 days
    second = prepare(spark, tmp_path, "r2", ROWS)
    assert second["destinations"]["meta_ads"]["baseline_run_id"] == "r1"
    assert second["destinations"]["meta_ads"]["accounting"]["members"] == {"unchanged": 2}   # not a full load again
    for destination in ("meta_ads", "quiet"):
        snapshots.commit(str(out), "r2", destination, "r1")
    pointer = json.loads((out / "snapshots" / "meta_ads.json").read_text())
    victim = out / pointer["files"][0]["path"]
    victim.unlink()
    with pytest.raises(PrepareError, match=victim.name):
        prepare(spark, tmp_path, "r3", ROWS)
