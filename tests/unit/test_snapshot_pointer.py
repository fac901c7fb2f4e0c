"""The snapshot pointer moves by compare-and-set, on a local folder and on S3 (moto)."""
import json
import threading
import uuid

import boto3
import pytest

from audience_relay.pipeline import snapshots, storage


@pytest.fixture(params=["local", "s3"])
def out(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out")
    bucket = f"pointer-{uuid.uuid4().hex[:12]}"
    request.getfixturevalue("moto_server")
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/work"


@pytest.fixture(autouse=True)
def prepared_snapshots(out):
    """Each run's candidate snapshot as prepare leaves it (a commit copies it out of runs/)."""
    for number in range(10):
        written(out, f"r{number}")


def written(out, run_id, files=("part-0.parquet",)):
    folder = storage.join(out, "runs", run_id, "snapshot")
    for name in files:
        storage.write_text(storage.join(folder, "destination_id=meta_ads", name), f"{run_id} {name}")
    storage.write_text(storage.join(folder, "_SUCCESS"), "")


def test_a_commit_copies_the_snapshot_out_of_the_expiring_run_folder_and_keeps_the_last_runs(out):
    for number in range(5):
        pointer = snapshots.commit(out, f"r{number}", "meta_ads", f"r{number - 1}" if number else None, keep=3)
    assert pointer["files"] == [{"path": "snapshots/meta_ads/r4/members/part-0.parquet", "size": len("r4 part-0.parquet")}]
    assert pointer["history"] == ["r4", "r3", "r2"]
    kept = {uri.split("/snapshots/meta_ads/")[1].split("/")[0] for uri in storage.list_files(storage.join(out, "snapshots", "meta_ads"))}
    assert kept == {"r4", "r3", "r2"}   # r0 and r1 deleted
    assert storage.read_text(storage.join(out, "snapshots", "meta_ads", "r4", "members", "part-0.parquet")) == "r4 part-0.parquet"


def test_a_run_whose_snapshot_was_not_written_completely_is_not_committed(out):
    storage.write_text(storage.join(out, "runs", "half", "snapshot", "destination_id=meta_ads", "part-0.parquet"), "x")
    with pytest.raises(snapshots.SnapshotIncomplete, match="half"):
        snapshots.commit(out, "half", "meta_ads", None)
    assert snapshots.committed_run(out, "meta_ads") is None


def test_racing_commits_from_one_baseline_leave_exactly_one_winner(out):
    snapshots.commit(out, "r0", "meta_ads", None)
    start, results = threading.Barrier(8), {}

    def commit(run_id):
        start.wait()
        try:
            snapshots.commit(out, run_id, "meta_ads", "r0")
            results[run_id] = "won"
        except snapshots.PointerMoved:
            results[run_id] = "refused"

    threads = [threading.Thread(target=commit, args=(f"r{i}",)) for i in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [run for run, result in results.items() if result == "won"]
    assert len(results) == 8 and len(winners) == 1
    assert snapshots.committed_run(out, "meta_ads") == winners[0]


def test_an_older_run_cannot_move_the_pointer_back(out):
    snapshots.commit(out, "r1", "meta_ads", None)
    snapshots.commit(out, "r2", "meta_ads", "r1")
    with pytest.raises(snapshots.PointerMoved, match=r"names run r2, not None, the baseline of run r1"):
        snapshots.commit(out, "r1", "meta_ads", None)
    assert snapshots.committed_run(out, "meta_ads") == "r2"
    assert snapshots.commit(out, "r2", "meta_ads", "r1")["run_id"] == "r2"  # a repeated commit is a no-op


def test_a_head_is_advanced_only_from_the_version_read(out):
    first = snapshots.baseline_for(out, "meta_ads", "r1")
    second = snapshots.baseline_for(out, "meta_ads", "r2")
    snapshots.advance_head(out, "meta_ads", "r1", first)
    with pytest.raises(storage.Conflict):
        snapshots.advance_head(out, "meta_ads", "r2", second)
    head = json.loads(storage.read_text(storage.join(out, "snapshots", "meta_ads.head.json")))
    assert (head["run_id"], head["baseline_run_id"]) == ("r1", None)


def _prepared(out, run_id, baseline):
    """What prepare leaves for a run of meta_ads: its manifest (the head is moved separately)."""
    storage.write_text(storage.join(out, "runs", run_id, "manifest.json"),
                       json.dumps({"destinations": {"meta_ads": {"baseline_run_id": baseline}}}))


def test_a_run_prepared_while_the_head_is_still_being_prepared_waits_instead_of_forking(out):
    """R1 moved the head and is writing its manifest; R2 must not build on R0 beside it (two runs on
    one baseline: whichever commits second is superseded, and every later run behind it)."""
    snapshots.commit(out, "r0", "meta_ads", None)
    snapshots.advance_head(out, "meta_ads", "r1", snapshots.baseline_for(out, "meta_ads", "r1"))
    with pytest.raises(snapshots.PrepareInProgress, match="r1"):
        snapshots.baseline_for(out, "meta_ads", "r2")
    _prepared(out, "r1", "r0")
    assert snapshots.baseline_for(out, "meta_ads", "r2").run_id == "r1"


def test_a_head_off_the_committed_runs_chain_is_not_built_on(out):
    """The head names a run whose chain does not reach the committed run (a run prepared before
    heads existed, or a fork): building on it would make every later run superseded."""
    _prepared(out, "r5", "rx")
    snapshots.advance_head(out, "meta_ads", "r5", snapshots.Baseline("rx", None))
    snapshots.commit(out, "r9", "meta_ads", None)
    assert snapshots.baseline_for(out, "meta_ads", "r10").run_id == "r9"
