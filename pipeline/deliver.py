"""`deliver`: send a prepared run's batches to their destinations, resumable and idempotent.

The manifest's batches are registered in the ledger; those not yet delivered become a small
DataFrame (one row per batch) spread over `workers` Spark partitions per destination, each
with its share of the destination's rate. Every partition opens one connector and runs the
delivery engine; the outcomes come back as a DataFrame, are written beside the run and
summarised. A destination whose batches are all delivered gets the run's snapshot committed.

The job script is jobs/deliver.py (its exit codes per status).
"""
from __future__ import annotations

import contextlib
import json
import random
import re
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone

from pyspark.sql import SparkSession
from pyspark.sql.types import DoubleType, IntegerType, LongType, StringType, StructField, StructType

from audience_relay.connectors.delivery import BatchOutcome, deliver_batches
from audience_relay.connectors.destination import Batch
from audience_relay.connectors.failpoints import crash_point
from audience_relay.connectors.quota import DailyQuota
from audience_relay.connectors.rate_limit import TokenBucket
from audience_relay.connectors.retry import RetryPolicy
from audience_relay.connectors.state.lease import Heartbeat, LeaseLock, lease_fence
from audience_relay.connectors.state.store import BatchRecord, BatchState, Fence, FenceRejected, StateStore
from audience_relay.pipeline import paths, removals, snapshots, storage
from audience_relay.pipeline.batch_files import BatchFileReader
from audience_relay.pipeline.config import Config
from audience_relay.pipeline.destinations import SUPPORTED_KINDS, build_destination
from audience_relay.pipeline.errors import UsageError
from audience_relay.pipeline.logs import PhaseTimer, log_event
from audience_relay.pipeline.manifest import OPS
from audience_relay.pipeline.metrics import delivery_tally, emit_deliver_metrics, emit_job_metrics
from audience_relay.pipeline.paths import RUN_ID
from audience_relay.pipeline.platform_audiences import with_platform_audience_ids

OUTCOME = StructType(
    [
        StructField("batch_key", StringType()),
        StructField("destination_id", StringType()),
        StructField("audience_id", StringType()),
        StructField("op", StringType()),
        StructField("ids", LongType()),
        StructField("state", StringType()),
        StructField("attempts", IntegerType()),
        StructField("retries", IntegerType()),
        StructField("waited_seconds", DoubleType()),
        StructField("error", StringType()),
        StructField("resume_at", StringType()),
    ]
)
DEFAULT_REQUESTS_PER_MINUTE = 600  # for destinations whose profile and config state no rate
CHECKSUM = re.compile(r"[0-9a-f]{64}")


class DeliverError(UsageError):
    """The run cannot be delivered as asked (no manifest, unsupported destination)."""


@dataclass(frozen=True)
class DeliverRequest:
    out: str
    run_id: str
    config: Config
    state: str  # a SQLite path or dynamodb://TABLE
    workers: int = 2
    endpoints: dict[str, str] = field(default_factory=dict)  # destination id -> URL override
    destinations: tuple[str, ...] = ()  # empty: all active destinations of the manifest
    # The quota lease the state machine holds (owner and fencing token): ledger and quota
    # writes are conditioned on it, so a job that lost its lease cannot write any more.
    fence_owner: str | None = None
    fence_token: int | None = None
    lease_seconds: float = 4 * 3600   # how far each heartbeat extends the state machine's lease
    # Workers stop sending once less than this share of the lease is left (its renewals failed).
    lease_stop_fraction: float = 0.25


def open_store(state: str) -> StateStore:
    if state.startswith("dynamodb://"):
        from audience_relay.connectors.state.dynamodb import DynamoStateStore

        return DynamoStateStore(state.removeprefix("dynamodb://"))
    from audience_relay.connectors.state.sqlite import SqliteStateStore

    return SqliteStateStore(state)


def _record(run_id: str, batch: dict) -> BatchRecord:
    return BatchRecord(run_id, batch["destination_id"], batch["audience_id"], batch["op"], batch["batch_number"], batch["checksum"], batch["ids"])


def _load(run_id: str, run_dir: str, row, reader: BatchFileReader) -> Batch:
    """The batch with its members; a file that cannot be read makes a batch that fails, not a crash."""
    record = _record(run_id, row.asDict())
    try:
        members, consent = reader.members_and_consent(storage.join(run_dir, row.file), row.batch_number)
        return Batch(record, members, member_consent=consent)
    except Exception as error:  # noqa: BLE001 - recorded as the batch's failure
        return Batch(record, [], load_error=f"batch file {row.file} unreadable: {type(error).__name__}")


def check_manifest_paths(manifest: dict, source: str) -> None:
    """Refuse a manifest whose batches would make paths outside the run or the destination's folder.

    A batch's `file` is joined to the run folder (read here); its destination, audience, op,
    number and checksum become the SFTP remote path and the S3 key of file destinations. Prepare
    writes only safe values; a manifest edited by hand or by someone else may not hold them.
    """
    for position, batch in enumerate(manifest.get("batches", [])):
        where = f"{source}: batches[{position}]"
        if not isinstance(batch, dict):
            raise paths.UnsafePath(f"{where}: not an object")
        for key in ("destination_id", "audience_id"):
            paths.segment(batch.get(key), f"{where}.{key}")
        if batch.get("op") not in OPS:
            raise paths.UnsafePath(f"{where}.op: {batch.get('op')!r} is not one of {list(OPS)}")
        number = batch.get("batch_number")
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise paths.UnsafePath(f"{where}.batch_number: {number!r} is not a batch number")
        checksum = batch.get("checksum")
        if not isinstance(checksum, str) or not CHECKSUM.fullmatch(checksum):
            raise paths.UnsafePath(f"{where}.checksum: {checksum!r} is not a SHA-256 hex digest")
        paths.relative_under(batch.get("file"), "batches", f"{where}.file")


def _fence(request: DeliverRequest, quota_key: str) -> Fence | None:
    if request.fence_owner is None or request.fence_token is None:
        return None
    return lease_fence(request.state.removeprefix("dynamodb://"), quota_key, request.fence_owner, request.fence_token,
                       request.lease_seconds * request.lease_stop_fraction)


@contextlib.contextmanager
def _lease_heartbeats(request: DeliverRequest, destinations: list):
    """Keep the state machine's quota leases alive while sending (it acquired them and releases them)."""
    beats: dict[str, Heartbeat] = {}
    with contextlib.ExitStack() as stack:
        if request.fence_owner is not None and request.fence_token is not None:
            lock = LeaseLock(request.state.removeprefix("dynamodb://"))
            for quota_key in sorted({d.quota_key for d in destinations}):
                beat = beats[quota_key] = stack.enter_context(
                    Heartbeat(lock, quota_key, request.fence_owner, request.lease_seconds, held_token=request.fence_token))
                if beat.lost.is_set():
                    log_event("deliver.lease_lost", level="WARNING", quota_key=quota_key, owner=request.fence_owner)
        yield
    for quota_key, beat in beats.items():
        if beat.renewal_failures:
            log_event("deliver.lease_renewal_failed", level="WARNING", quota_key=quota_key, failures=beat.renewal_failures,
                      error=beat.last_renewal_error, lost=beat.lost.is_set())


def _deliver_partition(request: DeliverRequest, run_dir: str, workers: dict[str, int]):
    """The function each Spark partition runs: one connector per destination it holds."""
    config, run_id, state, endpoints = request.config, request.run_id, request.state, request.endpoints

    def run(rows):
        quota_keys = {d.id: d.quota_key for d in config.destinations}
        by_destination: dict[str, list] = {}
        for row in rows:
            by_destination.setdefault(row.destination_id, []).append(row)
        store = open_store(state)
        for destination_id, batch_rows in by_destination.items():
            destination = next(d for d in config.destinations if d.id == destination_id)
            rpm = (destination.rate_limit and destination.rate_limit.requests_per_minute) or destination.profile_spec.requests_per_minute or DEFAULT_REQUESTS_PER_MINUTE
            # Destinations that share a quota key share the API project's per-minute rate too.
            sharing = sum(1 for d in workers if quota_keys[d] == destination.quota_key)
            bucket = TokenBucket.partition_share(rpm, workers[destination_id] * sharing)
            reset = destination.profile_spec.quota_reset_timezone
            fence = _fence(request, destination.quota_key)
            quota = DailyQuota(store, destination.quota_key, destination.daily_quota.requests, reset, fence=fence) if destination.daily_quota else None
            reader = BatchFileReader()
            batches = (_load(run_id, run_dir, row, reader) for row in sorted(batch_rows, key=lambda r: (r.audience_id, r.op, r.batch_number)))
            connector = build_destination(destination, endpoints.get(destination_id))
            for outcome in deliver_batches(connector, batches, store, bucket, quota, RetryPolicy(), random.Random(), reset_timezone=reset, fence=fence):
                yield tuple(asdict(outcome).values())

    return run


def _row_accounting(manifest: dict, destination_id: str, delivered_keys: set[str], run_id: str) -> dict:
    """DESIGN.md accounting after delivery: every input row once, delivered or still pending."""
    prepared = manifest["destinations"][destination_id]["accounting"]
    delivered = sum(
        b["rows"] for b in manifest["batches"]
        if b["destination_id"] == destination_id and _record(run_id, b).batch_key in delivered_keys
    )
    rows = {
        "delivered": delivered,
        "pending": prepared["rows"]["to_deliver"] - delivered + prepared["rows"]["pending"],
        **{k: prepared["rows"][k] for k in ("unchanged", "consent_filtered", "unmapped", "rejected")},
    }
    return {"input_rows": prepared["input_rows"], "rows": rows, "reconciles": sum(rows.values()) == prepared["input_rows"]}


def _status(outcomes: list[BatchOutcome], ledger: list[BatchRecord]) -> tuple[str, str | None]:
    """FAILED if any batch failed (now or earlier, still dead-lettered) or went unrecorded;
    QUOTA_DEFERRED while batches wait; SUCCEEDED when every batch is delivered."""
    if any(o.state in ("unrecorded", "fenced") for o in outcomes) or any(r.state is BatchState.FAILED for r in ledger):
        return "FAILED", None
    deferred = [o.resume_at for o in outcomes if o.state == "deferred" and o.resume_at]
    if deferred or any(r.state is not BatchState.DELIVERED for r in ledger):
        return "QUOTA_DEFERRED", max(deferred) if deferred else None
    return "SUCCEEDED", None


# Per destination, the most pressing status names the run's: nothing is done while one fails
# or waits. WAITING: an earlier run of the destination's chain is still being delivered.
# BLOCKED: prepare left the destination out while an earlier run's held removals wait for a
# decision; nothing of this run is for it. REMOVALS_HELD: all else was sent; removals over the
# guard wait for `approve-removals`.
STATUS_ORDER = ("FAILED", "BLOCKED", "QUOTA_DEFERRED", "WAITING", "REMOVALS_HELD", "SUPERSEDED", "SUCCEEDED")


def _blocked_entry(run_id: str, destination_id: str, blocked_by: dict) -> dict:
    """The report of a destination prepare left out of the run (manifest `blocked`): nothing sent,
    and what unblocks it."""
    return {
        "status": "BLOCKED", "resume_at": None, "batches": {state.value: 0 for state in BatchState},
        "ids": {state.value: 0 for state in BatchState}, "sent_now": 0, "fenced": 0, "retries": 0,
        "snapshot_committed": False, "superseded_by": None, "waiting_for": None, "removals_held": {},
        "blocked_by": {"run_id": blocked_by["run_id"], "audiences": blocked_by["audiences"]},
        "note": (f"run {run_id} left {destination_id} out: run {blocked_by['run_id']} holds its removals of "
                 f"{blocked_by['audiences']} for a decision (audience-relay approve-removals --run {blocked_by['run_id']} "
                 f"--destination {destination_id} [--reject]); then prepare {destination_id} again"),
        "accounting": None,   # none of the run's rows are for it
    }


def _destination_status(position: str, outcomes: list[BatchOutcome], ledger: list[BatchRecord], waiting_resume_at: str | None) -> tuple[str, str | None]:
    """A superseded or waiting destination sent nothing: its status says why, unless batches of
    an earlier attempt failed, which keep their dead letters and FAILED."""
    status, resume_at = _status(outcomes, ledger)
    if status == "FAILED" or position in ("next", "committed"):
        return status, resume_at
    return ("SUPERSEDED", None) if position == "superseded" else ("WAITING", waiting_resume_at)


def _resume_of(out: str, run_id: str, destination_id: str) -> str | None:
    """When the run waited for expects to go on: its deferral's `resume_at`, if still ahead."""
    text = storage.read_text(storage.join(out, "runs", run_id, "delivery", destination_id, "summary.json"))
    resume_at = json.loads(text).get("resume_at") if text else None
    return resume_at if resume_at and resume_at > datetime.now(timezone.utc).isoformat() else None


def _commit(request: DeliverRequest, store: StateStore, quota_key: str, destination_id: str, baseline: str | None) -> tuple[str, str | None]:
    """Move the destination's pointer to this run, under the lease's fence when there is one.

    Returns the run's position after it: "committed", "superseded" (another run was committed
    first) or "fenced" (the lease passed to another holder: the next holder commits)."""
    fence = _fence(request, quota_key)
    try:
        if fence is not None:
            store.check_fence(fence)
        crash_point("deliver.before_snapshot_commit")
        snapshots.commit(request.out, request.run_id, destination_id, baseline, keep=request.config.defaults.snapshots_kept)
        crash_point("deliver.after_snapshot_commit")
    except FenceRejected:
        return "fenced", None
    except snapshots.PointerMoved:
        return "superseded", snapshots.committed_run(request.out, destination_id)
    return "committed", None


def _send(spark: SparkSession, request: DeliverRequest, run_dir: str, todo: list[dict], chosen_ids: set[str], timer: PhaseTimer) -> list[BatchOutcome]:
    """Deliver `todo` from the executors, each batch once, and keep the outcomes beside the run."""
    workers = {d: max(1, min(request.workers, sum(1 for b in todo if b["destination_id"] == d))) for d in chosen_ids}
    slots = {(d, w): i for i, (d, w) in enumerate((d, w) for d in sorted(workers) for w in range(workers[d]))}
    rows = [
        (b["destination_id"], b["audience_id"], b["op"], b["batch_number"], b["checksum"], b["ids"], b["file"])
        for b in todo
    ]
    frame = spark.createDataFrame(rows, "destination_id string, audience_id string, op string, batch_number int, checksum string, ids long, file string")
    keyed = frame.rdd.map(lambda r: ((r.destination_id, r.batch_number % workers[r.destination_id]), r))
    spread = keyed.partitionBy(len(slots), lambda key: slots[key]).values()
    work = _deliver_partition(request, run_dir, workers)
    with timer.phase("send"):
        # Collected once (one small row per batch): a second action would send again.
        rows = spread.mapPartitions(work).collect()
    outcomes = [BatchOutcome(*row) for row in rows]
    spark.createDataFrame(rows, OUTCOME).coalesce(1).write.mode("overwrite").parquet(
        # Per destination set: deliveries of one run to different destinations may run at once.
        storage.join(run_dir, "delivery", "_outcomes", f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}-{'+'.join(sorted(chosen_ids))}")
    )
    return outcomes


def _settle(request: DeliverRequest, store: StateStore, manifest: dict, chosen: list, outcomes: list[BatchOutcome],
            held_back: dict[str, tuple[str, str | None]], baselines: dict[str, str | None], decided: dict[str, dict[str, str]]) -> dict[str, dict]:
    """Each destination's report from the ledger, and its snapshot committed when every batch is
    delivered and every held removal decided on."""
    chosen_ids = {d.id for d in chosen}
    ledger = store.batches(request.run_id)
    quota_keys = {d.id: d.quota_key for d in chosen}
    report, committed = {}, []
    for destination_id in sorted(chosen_ids):
        own = [r for r in ledger if r.destination_id == destination_id]
        states = {state.value: sum(1 for r in own if r.state is state) for state in BatchState}
        ids = {state.value: sum(r.ids for r in own if r.state is state) for state in BatchState}
        mine = [o for o in outcomes if o.destination_id == destination_id]
        held = {a: {**numbers, "decision": decided[destination_id].get(a)} for a, numbers in removals.held(manifest, destination_id).items()}
        undecided = sorted(a for a, entry in held.items() if entry["decision"] is None)
        # Looked at again when it sent: another run may have been committed meanwhile.
        where, other = held_back.get(destination_id) or snapshots.position(request.out, destination_id, request.run_id, baselines[destination_id])
        if where == "next" and states["delivered"] == len(own) and not undecided:
            where, other = _commit(request, store, quota_keys[destination_id], destination_id, baselines[destination_id])
        if where == "committed":  # now, or by an earlier attempt of this run
            committed.append(destination_id)
        # A commit fenced out counts as fenced: the machine takes the lease again and commits then.
        fenced_commit = where == "fenced"
        own_status, own_resume_at = ("FAILED", None) if fenced_commit else _destination_status(
            where, mine, own, _resume_of(request.out, other, destination_id) if where == "waiting" else None)
        if own_status == "SUCCEEDED" and undecided:   # everything else went: the held removals wait for a decision
            own_status = "REMOVALS_HELD"
        report[destination_id] = {
            "status": own_status,
            "resume_at": own_resume_at,
            "batches": states,
            "ids": ids,
            "sent_now": sum(1 for o in mine if o.state == "delivered"),
            "fenced": sum(1 for o in mine if o.state == "fenced") + fenced_commit,
            "retries": sum(o.retries for o in mine),
            "snapshot_committed": destination_id in committed,
            # A newer run was committed since this one was prepared: its delta is no longer
            # against what the destination holds, so it must not become the baseline.
            "superseded_by": other if where == "superseded" else None,
            # An earlier run of this destination is not committed yet: it is delivered first.
            "waiting_for": other if where == "waiting" else None,
            # Audiences whose removals the guard held: its numbers and the decision (None: nobody decided yet).
            "removals_held": held,
            "accounting": _row_accounting(manifest, destination_id, {r.batch_key for r in own if r.state is BatchState.DELIVERED}, request.run_id),
        }
    return report


def run_deliver(spark: SparkSession, request: DeliverRequest) -> dict:
    started = time.monotonic()
    if not RUN_ID.fullmatch(request.run_id):
        raise DeliverError(f"run id {request.run_id!r} must match {RUN_ID.pattern} (it becomes a path)")
    run_dir = storage.join(request.out, "runs", request.run_id)
    manifest_uri = storage.join(run_dir, "manifest.json")
    text = storage.read_text(manifest_uri)
    if text is None:
        raise DeliverError(f"run {request.run_id}: no manifest under {run_dir}; prepare the run first")
    manifest = json.loads(text)
    check_manifest_paths(manifest, manifest_uri)
    if request.fence_owner is not None and not request.state.startswith("dynamodb://"):
        raise DeliverError("--fence_owner/--fence_token need --state dynamodb://TABLE, where the lease lives")
    if not request.state.startswith("dynamodb://") and not spark.sparkContext.master.startswith("local"):
        raise DeliverError(f"--state {request.state}: a SQLite ledger only works on one machine; on a cluster use dynamodb://TABLE")
    config = request.config
    blocked = {d: _blocked_entry(request.run_id, d, manifest["blocked"][d]) for d in sorted(set(request.destinations) & set(manifest.get("blocked", {})))}
    for destination_id, entry in blocked.items():
        log_event("deliver.blocked", level="WARNING", run_id=request.run_id, destination=destination_id, blocked_by=entry["blocked_by"], note=entry["note"])
    chosen = [d for d in config.active_destinations if d.id in manifest["destinations"] and (not request.destinations or d.id in request.destinations)]
    unsupported = [d.id for d in chosen if d.kind not in SUPPORTED_KINDS]
    if unsupported:
        raise DeliverError(f"destinations {unsupported}: delivery supports kinds {list(SUPPORTED_KINDS)}; pass --destination to choose others")
    for destination in chosen:  # fail here, naming the destination, not later inside an executor
        build_destination(destination, request.endpoints.get(destination.id))
    chosen_ids = {d.id for d in chosen}
    timer = PhaseTimer("deliver", run_id=request.run_id)
    log_event("deliver.start", run_id=request.run_id, destinations=sorted(chosen_ids))

    store = open_store(request.state)
    # Held removals go only once approved; rejected and undecided ones are not batches to send.
    decided = {d: removals.decisions(request.out, request.run_id, d) for d in chosen_ids}
    batches = [b for b in manifest["batches"] if b["destination_id"] in chosen_ids
               and (not b.get("held") or decided[b["destination_id"]].get(b["audience_id"]) == removals.APPROVED)]
    store.register([_record(request.run_id, b) for b in batches])
    crash_point("deliver.after_register")
    # The run's delta applies only while the pointer names its baseline. A newer run committed
    # since ("superseded"): sending would undo its adds or remove members the destination keeps.
    # An earlier run of the chain not yet committed ("waiting"): it goes first.
    baselines = {d: manifest["destinations"][d]["baseline_run_id"] for d in chosen_ids}
    positions = {d: snapshots.position(request.out, d, request.run_id, baselines[d]) for d in sorted(chosen_ids)}
    held_back = {d: (where, other) for d, (where, other) in positions.items() if where in ("superseded", "waiting")}
    for where, field_name in (("superseded", "superseded_by"), ("waiting", "waiting_for")):
        if runs := {d: other for d, (w, other) in held_back.items() if w == where}:
            log_event(f"deliver.{where}", level="WARNING", run_id=request.run_id, **{field_name: runs}, note="nothing sent to these destinations")
    # Delivered batches are done; failed ones wait in the dead-letter store for `--replay`.
    settled = {r.batch_key for r in store.batches(request.run_id) if r.state in (BatchState.DELIVERED, BatchState.FAILED)}
    todo = [b for b in batches if _record(request.run_id, b).batch_key not in settled and b["destination_id"] not in held_back]
    # Audiences the platform has no id for in the config: found or created there, before any send.
    sending = {b["destination_id"] for b in todo}
    request = replace(request, config=config.model_copy(update={"destinations": [
        with_platform_audience_ids(d, store, request.endpoints.get(d.id)) if d.id in sending else d for d in config.destinations]}))

    # One heartbeat from the first send to the commit: the outcomes, the ledger and the pointer
    # are read in between (seconds on S3), and a lease lapsed there fences the commit out.
    with _lease_heartbeats(request, chosen):
        outcomes = _send(spark, request, run_dir, todo, chosen_ids, timer) if todo else []
        report = _settle(request, store, manifest, chosen, outcomes, held_back, baselines, decided) | blocked
    status = min((entry["status"] for entry in report.values()), key=STATUS_ORDER.index, default="SUCCEEDED")
    resume_at = max((entry["resume_at"] for entry in report.values() if entry["status"] == status and entry["resume_at"]), default=None)
    summary = {
        "status": status,
        "run_id": request.run_id,
        "resume_at": resume_at,
        "destinations": report,
        "dead_letters": len(store.dead_letters(request.run_id)),
        "seconds": round(time.monotonic() - started, 1),
    }
    # A destination's state machine reads its own object to decide: done, wait until
    # `resume_at`, or fail. Deliveries of one run to several destinations may run at once, so
    # each writes only its destinations' files; the run-wide file when it delivered them all.
    for destination_id, entry in report.items():
        own_summary = {**entry, "destination": destination_id, "run_id": request.run_id, "seconds": summary["seconds"]}
        storage.write_text(storage.join(run_dir, "delivery", destination_id, "summary.json"), json.dumps(own_summary, indent=2) + "\n")
    if chosen_ids == set(manifest["destinations"]):
        storage.write_text(storage.join(run_dir, "delivery", "summary.json"), json.dumps(summary, indent=2) + "\n")
    with_quota = {d.id for d in chosen if d.daily_quota}
    for destination_id, entry in report.items():
        tally = delivery_tally(entry, [o for o in outcomes if o.destination_id == destination_id], destination_id in with_quota)
        log_event("deliver.destination_done", run_id=request.run_id, destination=destination_id, status=entry["status"],
                  batches=entry["batches"], rows=(entry["accounting"] or {}).get("rows"), **tally, seconds=summary["seconds"])
        emit_deliver_metrics(request.run_id, destination_id, tally)
    emit_job_metrics("deliver", request.run_id, summary["seconds"], DeadLetters=summary["dead_letters"])
    log_event("deliver.done", status=status, run_id=request.run_id, resume_at=resume_at, dead_letters=summary["dead_letters"], seconds=summary["seconds"])
    return summary
