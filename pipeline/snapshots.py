"""The destination's committed membership snapshot: what we believe the destination holds.

`prepare` writes a candidate snapshot inside its run; it becomes current only when delivery of
that run completes, by moving the destination's pointer `<out>/snapshots/<destination>.json`
from the run's baseline to the run, in one compare-and-set. Until then the previous snapshot
stays current, so a failed or deferred delivery is retried against the right baseline.

Runs of one destination form a chain: each is prepared against the destination's head (the
last run prepared for it, `<destination>.head.json`), committed or not, and is delivered only
once the pointer names its baseline. A run prepared while the one before it is half-delivered
therefore waits for it instead of sending a delta against a state the destination is leaving.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from audience_relay.pipeline import paths, removals, storage
from audience_relay.pipeline.logs import log_event
from audience_relay.transforms.delta import REMOVE_HELD
from audience_relay.transforms.schemas import BATCHED, CONSENT_SIGNALS, SNAPSHOT

# The snapshot is written partitioned by destination, so its files lack that column; batch
# files lack the three they are partitioned by.
STORED_SNAPSHOT = StructType([f for f in SNAPSHOT.fields if f.name != "destination_id"])
STORED_BATCH = StructType([f for f in BATCHED.fields if f.name not in ("destination_id", "audience_id", "op")])


def run_snapshot_path(out: str, run_id: str) -> str:
    return storage.join(out, "runs", run_id, "snapshot")


class PointerMoved(Exception):
    """The pointer no longer names the run a commit expected: another run was committed first."""


def _pointer_uri(out: str, destination_id: str) -> str:
    return storage.join(out, "snapshots", f"{destination_id}.json")


def _head_uri(out: str, destination_id: str) -> str:
    return storage.join(out, "snapshots", f"{destination_id}.head.json")


def _checked(text: str | None, uri: str, *optional: str) -> dict | None:
    """The JSON document with its run ids checked: they name folders read and written."""
    if not text:
        return None
    document = json.loads(text)
    paths.run_id(document.get("run_id") if isinstance(document, dict) else None, f"{uri}: run_id")
    for key in optional:
        if document.get(key) is not None:
            paths.run_id(document[key], f"{uri}: {key}")
    return document


def current_pointer(out: str, destination_id: str) -> dict | None:
    """The committed pointer, its run id checked: it names the snapshot folder read from it."""
    uri = _pointer_uri(out, destination_id)
    return _checked(storage.read_text(uri), uri)


def committed_run(out: str, destination_id: str) -> str | None:
    """The run whose snapshot the destination holds now (None before its first commit)."""
    pointer = current_pointer(out, destination_id)
    return pointer["run_id"] if pointer else None


def _prepared(out: str, run_id: str) -> bool:
    return storage.read_text(storage.join(out, "runs", run_id, "manifest.json")) is not None


@dataclass(frozen=True)
class Baseline:
    """What a run of one destination is prepared against, and the head version it read."""

    run_id: str | None
    head_version: str | None


class PrepareInProgress(Exception):
    """The destination's head is a run still being prepared: building beside it would fork the chain."""


# A head without a manifest younger than this is a prepare still running (a Glue job's timeout is
# 8 h); older, it is a prepare that died, and stands for the run it was built on.
UNFINISHED_PREPARE_SECONDS = 8 * 3600


def _prepared_at(head: dict) -> float:
    try:
        return datetime.fromisoformat(head["prepared_at"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return 0.0


def _chain(out: str, destination_id: str, run_id: str | None):
    """Walk back from `run_id` through the runs' manifests: (run, the run it was built on) pairs,
    ending at a run without a manifest or a section for the destination."""
    step, seen = run_id, set()
    while step is not None and step not in seen:
        seen.add(step)
        text = storage.read_text(storage.join(out, "runs", step, "manifest.json"))
        section = json.loads(text).get("destinations", {}).get(destination_id) if text else None
        if section is None:
            return
        yield step, section.get("baseline_run_id")
        step = section.get("baseline_run_id")


def _reaches(out: str, destination_id: str, run_id: str | None, committed: str | None) -> bool:
    """Whether `committed` is `run_id` or an ancestor of it through the runs' manifests."""
    return run_id == committed or any(prior == committed for _, prior in _chain(out, destination_id, run_id))


def baseline_for(out: str, destination_id: str, run_id: str) -> Baseline:
    """The destination's head: the last run prepared for it (delivered or not), else the
    committed run. A head that is this very run prepared again stands for the run it was built
    on, as does one whose prepare died; one still being prepared raises `PrepareInProgress`. A
    head whose chain does not reach the committed run (prepared before heads existed, its
    manifests expired) is not built on: the committed run is."""
    uri = _head_uri(out, destination_id)
    text, version = storage.read_versioned(uri)
    head = _checked(text, uri, "baseline_run_id")
    committed = committed_run(out, destination_id)
    if head is None:
        return Baseline(committed, version)
    if head["run_id"] == run_id:
        candidate = head.get("baseline_run_id")
    elif head["run_id"] == committed or _prepared(out, head["run_id"]):   # committed: its run folder may have expired
        candidate = head["run_id"]
    elif time.time() - _prepared_at(head) < UNFINISHED_PREPARE_SECONDS:
        raise PrepareInProgress(f"run {head['run_id']} is being prepared for {destination_id} (since {head.get('prepared_at')}); "
                                f"prepare run {run_id} once it is done, so it builds on it")
    else:
        candidate = head.get("baseline_run_id")
    return Baseline(candidate if _reaches(out, destination_id, candidate, committed) else committed, version)


def advance_head(out: str, destination_id: str, run_id: str, baseline: Baseline) -> None:
    """Make `run_id` the destination's head, provided no other run became it since `baseline`
    was read (`storage.Conflict` otherwise: prepare the run again, it then builds on that run)."""
    document = {"destination_id": destination_id, "run_id": run_id, "baseline_run_id": baseline.run_id,
                "prepared_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    storage.write_text_if(_head_uri(out, destination_id), json.dumps(document, indent=2) + "\n", baseline.head_version)


def position(out: str, destination_id: str, run_id: str, baseline_run_id: str | None) -> tuple[str, str | None]:
    """Where the run stands against the pointer, and the run that decides it:
    - ("committed", None): the pointer names this run;
    - ("next", None): it names the run's baseline, so the run's delta applies now;
    - ("waiting", R): it names an earlier run of the chain; R (the run built on it) goes first;
    - ("superseded", R): it names R, a run off this run's chain: the delta will never apply."""
    committed = committed_run(out, destination_id)
    if committed == run_id:
        return "committed", None
    if committed == baseline_run_id:
        return "next", None
    first = next((step for step, prior in _chain(out, destination_id, baseline_run_id) if prior == committed), None)
    return ("waiting", first) if first is not None else ("superseded", committed)


def _snapshot_path(out: str, run_id: str, destination_id: str) -> str:
    return storage.join(run_snapshot_path(out, run_id), f"destination_id={destination_id}")


class SnapshotIncomplete(Exception):
    """A snapshot that should be a baseline is missing or lacks files: a delta against it would be wrong."""


def committed_copy_path(out: str, destination_id: str, run_id: str) -> str:
    """Where a committed snapshot lives: outside `runs/`, which the work bucket expires."""
    return storage.join(out, "snapshots", destination_id, run_id)


def _held_folder(out: str, run_id: str, destination_id: str, audience_id: str) -> str:
    return storage.join(out, "runs", run_id, "batches", f"destination_id={destination_id}", f"audience_id={audience_id}", f"op={REMOVE_HELD}")


def _rejected(out: str, run_id: str, destination_id: str) -> list[str]:
    return sorted(a for a, decision in removals.decisions(out, run_id, destination_id).items() if decision == removals.REJECTED)


def _copy_committed(out: str, run_id: str, destination_id: str) -> list[dict]:
    """Copy the run's snapshot of the destination, and the members its rejected removals keep,
    to `committed_copy_path`; returns each copied file's path (under `out`) and size."""
    if not storage.exists(storage.join(run_snapshot_path(out, run_id), "_SUCCESS")):
        raise SnapshotIncomplete(f"run {run_id}: its snapshot {run_snapshot_path(out, run_id)} was not written completely; it cannot be committed")
    target = committed_copy_path(out, destination_id, run_id)
    parts = [("members", _snapshot_path(out, run_id, destination_id))]
    parts += [(f"kept/audience_id={a}", _held_folder(out, run_id, destination_id, a)) for a in _rejected(out, run_id, destination_id)]
    relative_target = f"snapshots/{destination_id}/{run_id}"
    return [{"path": f"{relative_target}/{part}/{name}", "size": size}
            for part, source in parts for name, size in storage.copy_folder(source, storage.join(target, part))]


def commit(out: str, run_id: str, destination_id: str, baseline_run_id: str | None, keep: int = 3) -> dict:
    """Make the run's candidate snapshot the destination's current one: the pointer moves from
    the run's baseline to the run, or not at all (`PointerMoved`), so neither a late worker nor
    an old run delivered by hand can move it back. The snapshot is first copied out of `runs/`
    (the pointer lists its files, checked when it is read); the copies of the last `keep`
    committed runs are kept, older ones deleted."""
    uri = _pointer_uri(out, destination_id)
    text, version = storage.read_versioned(uri)
    current = _checked(text, uri)
    if current and current["run_id"] == run_id:
        return current
    if (current["run_id"] if current else None) != baseline_run_id:
        raise PointerMoved(f"{uri}: names run {current['run_id'] if current else None}, not {baseline_run_id}, "
                           f"the baseline of run {run_id}")
    files = _copy_committed(out, run_id, destination_id)
    history = [run_id, *[r for r in (current or {}).get("history", [current["run_id"]] if current else []) if r != run_id]]
    pointer = {
        "destination_id": destination_id,
        "run_id": run_id,
        "path": committed_copy_path(out, destination_id, run_id),
        "committed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": files,
        "history": history[:keep],
    }
    try:
        storage.write_text_if(uri, json.dumps(pointer, indent=2) + "\n", version)
    except storage.Conflict:
        storage.delete_folder(committed_copy_path(out, destination_id, run_id))
        raise PointerMoved(f"{uri}: another run was committed while run {run_id} was") from None
    for older in history[keep:]:
        paths.run_id(older, f"{uri}: history")
        try:
            storage.delete_folder(committed_copy_path(out, destination_id, older))
        except PermissionError as refused:   # the commit stands; the copy stays until an operator deletes it
            log_event("snapshot_prune_refused", "WARN", destination=destination_id, run_id=older, error=str(refused))
    return pointer


def _kept_members(spark: SparkSession, destination_id: str, folders: dict[str, str]) -> list[DataFrame]:
    """Members whose held removal was rejected (audience -> folder of them): the destination keeps
    them, so the baseline lists them although the candidate snapshot (written before anyone
    decided) does not."""
    return [spark.read.schema(STORED_BATCH).parquet(folder).select(
        F.lit(destination_id).alias("destination_id"), F.lit(audience_id).alias("audience_id"), "id_type", "match_key", *CONSENT_SIGNALS)
        for audience_id, folder in sorted(folders.items())]


def _members(spark: SparkSession, destination_id: str, folder: str) -> DataFrame:
    return spark.read.schema(STORED_SNAPSHOT).parquet(folder).select(
        F.lit(destination_id).alias("destination_id"), "audience_id", "id_type", "match_key", *CONSENT_SIGNALS)


def _read_committed(spark: SparkSession, out: str, destination_id: str, pointer: dict) -> list[DataFrame]:
    """The committed copy the pointer lists, every listed file checked present with its size."""
    run_id, uri = pointer["run_id"], _pointer_uri(out, destination_id)
    own = f"snapshots/{destination_id}/{run_id}/"
    listed = [paths.relative_under(f.get("path"), "snapshots", f"{uri}: files") for f in pointer["files"]]
    outside = [p for p in listed if not p.startswith(own)]
    if outside:
        raise SnapshotIncomplete(f"{uri}: files {outside[:3]} are not under {own}")
    present = storage.file_sizes(storage.join(out, own))   # one listing, not a request per file
    damaged = [p for p, f in zip(listed, pointer["files"]) if present.get(p[len(own):]) != f.get("size")]
    if damaged:
        raise SnapshotIncomplete(f"committed snapshot of {destination_id} (run {run_id}) is incomplete: {len(damaged)} of its "
                                 f"{len(listed)} files are missing or changed, first {storage.join(out, damaged[0])}; restore them "
                                 "(the bucket keeps old versions) before preparing, or a delta against it would be wrong")
    root = committed_copy_path(out, destination_id, run_id)
    frames = [_members(spark, destination_id, storage.join(root, "members"))] if any(p.startswith(own + "members/") for p in listed) else []
    kept = sorted({p[len(own):].split("/")[1].removeprefix("audience_id=") for p in listed if p.startswith(own + "kept/")})
    return frames + _kept_members(spark, destination_id, {a: storage.join(root, "kept", f"audience_id={a}") for a in kept})


def read_previous(spark: SparkSession, out: str, baselines: dict[str, str | None]) -> DataFrame:
    """The union of the baseline snapshots of these destinations (destination id -> run).

    A destination without a baseline contributes nothing: its first run is a full load.
    """
    frames = []
    for destination_id, run_id in baselines.items():
        if run_id is None:
            continue
        pointer = current_pointer(out, destination_id)
        if pointer and pointer["run_id"] == run_id and "files" in pointer:   # committed: its copy out of runs/
            frames.extend(_read_committed(spark, out, destination_id, pointer))
            continue
        # Not committed yet (a head still being delivered): its candidate in the run folder, read
        # from the path the checked run id names under `out`, never one a file names.
        path = _snapshot_path(out, run_id, destination_id)
        if not storage.exists(storage.join(run_snapshot_path(out, run_id), "_SUCCESS")):
            raise SnapshotIncomplete(f"snapshot of {destination_id} (run {run_id}) at {run_snapshot_path(out, run_id)} is missing or "
                                     "was not written completely (no _SUCCESS)")
        if storage.exists(path):   # Spark writes no folder for a destination without members
            frames.append(_members(spark, destination_id, path))
        frames.extend(_kept_members(spark, destination_id, {a: _held_folder(out, run_id, destination_id, a)
                                                            for a in _rejected(out, run_id, destination_id)}))
    previous = spark.createDataFrame([], SNAPSHOT)
    for frame in frames:
        previous = previous.unionByName(frame)
    return previous
