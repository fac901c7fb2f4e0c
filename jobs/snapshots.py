"""The destination's committed membership snapshot: what we believe the destination holds.

`prepare` writes a candidate snapshot inside its run; it becomes current only when delivery of
that run completes, by replacing the destination's pointer `<out>/snapshots/<destination>.json`
in one atomic write. Until then the previous snapshot stays current, so a failed or abandoned
delivery is retried against the right baseline.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from jobs import paths, storage
from transforms.schemas import SNAPSHOT

# The snapshot is written partitioned by destination, so its files lack that column.
STORED_SNAPSHOT = StructType([f for f in SNAPSHOT.fields if f.name != "destination_id"])


def run_snapshot_path(out: str, run_id: str) -> str:
    return storage.join(out, "runs", run_id, "snapshot")


def _pointer_uri(out: str, destination_id: str) -> str:
    return storage.join(out, "snapshots", f"{destination_id}.json")


def current_pointer(out: str, destination_id: str) -> dict | None:
    """The committed pointer, its run id checked: it names the snapshot folder read from it."""
    uri = _pointer_uri(out, destination_id)
    text = storage.read_text(uri)
    if not text:
        return None
    pointer = json.loads(text)
    paths.run_id(pointer.get("run_id") if isinstance(pointer, dict) else None, f"{uri}: run_id")
    return pointer


def _snapshot_path(out: str, run_id: str, destination_id: str) -> str:
    return storage.join(run_snapshot_path(out, run_id), f"destination_id={destination_id}")


def commit(out: str, run_id: str, destination_id: str) -> dict:
    """Make the run's candidate snapshot the destination's current one."""
    path = _snapshot_path(out, run_id, destination_id)
    pointer = {
        "destination_id": destination_id,
        "run_id": run_id,
        "path": path,
        "committed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    storage.write_text(_pointer_uri(out, destination_id), json.dumps(pointer, indent=2) + "\n")
    return pointer


def read_previous(spark: SparkSession, out: str, destination_ids: list[str]) -> tuple[DataFrame, dict[str, str | None]]:
    """The union of the committed snapshots of these destinations, and the run each came from.

    A destination without a committed snapshot contributes nothing: its first run is a full load.
    """
    frames, baselines = [], {}
    for destination_id in destination_ids:
        pointer = current_pointer(out, destination_id)
        baselines[destination_id] = pointer["run_id"] if pointer else None
        # Read from the path the (checked) run id names under `out`, not the pointer's `path`
        # (kept for readers): a pointer file cannot make prepare read outside the output root.
        path = _snapshot_path(out, pointer["run_id"], destination_id) if pointer else None
        if pointer and not storage.exists(path):
            # Spark writes no folder for a destination without members: an empty snapshot,
            # provided the run's snapshot was written completely.
            if storage.exists(storage.join(run_snapshot_path(out, pointer["run_id"]), "_SUCCESS")):
                continue
            raise FileNotFoundError(f"snapshot of {destination_id} points at {path}, which does not exist")
        if pointer:
            frames.append(
                spark.read.schema(STORED_SNAPSHOT).parquet(path)
                .select(F.lit(destination_id).alias("destination_id"), "audience_id", "id_type", "match_key")
            )
    previous = spark.createDataFrame([], SNAPSHOT)
    for frame in frames:
        previous = previous.unionByName(frame)
    return previous, baselines
