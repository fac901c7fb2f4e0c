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

from jobs import paths, removals, storage
from transforms.delta import REMOVE_HELD
from transforms.schemas import BATCHED, SNAPSHOT

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
    elif _prepared(out, head["run_id"]):
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


def commit(out: str, run_id: str, destination_id: str, baseline_run_id: str | None) -> dict:
    """Make the run's candidate snapshot the destination's current one: the pointer moves from
    the run's baseline to the run, or not at all (`PointerMoved`), so neither a late worker nor
    an old run delivered by hand can move it back."""
    uri = _pointer_uri(out, destination_id)
    text, version = storage.read_versioned(uri)
    current = _checked(text, uri)
    if current and current["run_id"] == run_id:
        return current
    if (current["run_id"] if current else None) != baseline_run_id:
        raise PointerMoved(f"{uri}: names run {current['run_id'] if current else None}, not {baseline_run_id}, "
                           f"the baseline of run {run_id}")
    pointer = {
        "destination_id": destination_id,
        "run_id": run_id,
        "path": _snapshot_path(out, run_id, destination_id),
        "committed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        storage.write_text_if(uri, json.dumps(pointer, indent=2) + "\n", version)
    except storage.Conflict:
        raise PointerMoved(f"{uri}: another run was committed while run {run_id} was") from None
    return pointer


def _kept_members(spark: SparkSession, out: str, run_id: str, destination_id: str) -> list[DataFrame]:
    """Members whose held removal was rejected: the destination keeps them, so the baseline lists
    them although the run's candidate snapshot (written before anyone decided) does not."""
    frames = []
    for audience_id, decision in sorted(removals.decisions(out, run_id, destination_id).items()):
        if decision == removals.REJECTED:
            folder = storage.join(out, "runs", run_id, "batches", f"destination_id={destination_id}", f"audience_id={audience_id}",
                                  f"op={REMOVE_HELD}")
            frames.append(spark.read.schema(STORED_BATCH).parquet(folder).select(
                F.lit(destination_id).alias("destination_id"), F.lit(audience_id).alias("audience_id"), "id_type", "match_key"))
    return frames


def read_previous(spark: SparkSession, out: str, baselines: dict[str, str | None]) -> DataFrame:
    """The union of the baseline snapshots of these destinations (destination id -> run).

    A destination without a baseline contributes nothing: its first run is a full load.
    """
    frames = []
    for destination_id, run_id in baselines.items():
        # Read from the path the (checked) run id names under `out`, not the pointer's `path`
        # (kept for readers): a pointer file cannot make prepare read outside the output root.
        path = _snapshot_path(out, run_id, destination_id) if run_id else None
        if run_id and not storage.exists(path):
            # Spark writes no folder for a destination without members: an empty snapshot,
            # provided the run's snapshot was written completely.
            if storage.exists(storage.join(run_snapshot_path(out, run_id), "_SUCCESS")):
                continue
            raise FileNotFoundError(f"snapshot of {destination_id} (run {run_id}) should be at {path}, which does not exist")
        if run_id:
            frames.append(
                spark.read.schema(STORED_SNAPSHOT).parquet(path)
                .select(F.lit(destination_id).alias("destination_id"), "audience_id", "id_type", "match_key")
            )
            frames.extend(_kept_members(spark, out, run_id, destination_id))
    previous = spark.createDataFrame([], SNAPSHOT)
    for frame in frames:
        previous = previous.unionByName(frame)
    return previous
