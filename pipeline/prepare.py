"""Prepare a run: raw segment membership -> per-destination delivery batches, in one pass over the input.

Writes the run layout of DESIGN.md under `<out>/runs/<run_id>/`: `rejected/`, `snapshot/`
(the candidate), `batches/` and, last, `manifest.json`, so a run without a manifest is an
incomplete run and may be prepared again. The job script is jobs/prepare.py.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from audience_relay.pipeline import paths, removals, snapshots, storage
from audience_relay.pipeline.accounting import ID_TYPE_NOT_ACCEPTED, MemberStat, mapped_rows
from audience_relay.pipeline.config import Config
from audience_relay.pipeline.errors import UsageError
from audience_relay.pipeline.inputs import Consent, naming_unreadable_files, read_consent, read_membership, require_completion_marker
from audience_relay.pipeline.logs import PhaseTimer, log_event
from audience_relay.pipeline.manifest import CHECKSUM_RULE, batch_list, destination_report, rejected_by_reason
from audience_relay.pipeline.metrics import emit_job_metrics, emit_prepare_metrics
from audience_relay.pipeline.input_statistics import input_statistics
from audience_relay.pipeline.quality import QualityError, check_input, check_opt_out_shares, raise_on_critical
from audience_relay.pipeline.session import task_slices
from audience_relay.transforms.audiences import consent_opt_outs, map_to_audiences, mark_opted_out, to_members
from audience_relay.transforms.batching import DEFAULT_FILE_ROWS, DEFAULT_SUB_BUCKETS, assign_batches
from audience_relay.transforms.consent_signals import carried, flag_invalid_consent, with_member_consent
from audience_relay.transforms.delta import BATCHED_STATUSES, SNAPSHOT_STATUSES, audience_sizes, classify_marked, mark_membership
from audience_relay.transforms.identifiers import normalize_identifiers
from audience_relay.transforms.schemas import AUDIENCE_MAPPING, AUDIENCE_SIZES, BATCHED, CONSENT, DESTINATION_RULES, REJECTED, SNAPSHOT

RUN_ID = paths.RUN_ID  # run ids become paths and execution names; checked with fullmatch
TARGET_FILE_ROWS = DEFAULT_FILE_ROWS
BROADCAST_OPT_OUTS_MAX = 5_000_000
# The normalized input and the members are kept on the executors' local disks (the OS's page cache
# keeps them in memory while it can), not in the heap: building PySpark's MEMORY_AND_DISK cache
# (serialized) ran out of heap instead of spilling, at 50M rows with 4 GB; on disk the run passes,
# for about 9% more time at 10M rows (bench/RESULTS.md). Memory then does not grow with the input.
LARGE_CACHE = StorageLevel.DISK_ONLY


class PrepareError(UsageError):
    """The request cannot be carried out as asked (bad run id, run already prepared)."""


@dataclass(frozen=True)
class PrepareRequest:
    input: str
    out: str
    config: Config
    config_source: str
    run_id: str
    consent: str | None = None
    input_format: str | None = None
    consent_format: str | None = None
    sub_buckets: int = DEFAULT_SUB_BUCKETS
    # "skip": a run whose manifest exists is complete (the manifest is written last), so a
    # retried or re-driven orchestration step finds it done instead of failing.
    if_prepared: str = "fail"
    # A folder input is read only once its completion marker is there (False: the CLI's override).
    require_completion_marker: bool = True


def default_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def audience_mapping(spark: SparkSession, config: Config) -> DataFrame:
    rows = []
    for destination in config.active_destinations:
        for audience_id, segments in destination.audiences.items():
            for id_type in destination.accepted_id_types:
                rule = destination.identifier_rule(id_type)
                for segment in segments:
                    rows.append(
                        (segment, id_type, destination.id, audience_id, rule.hash_sha256, rule.phone_with_plus, rule.gmail_canonical)
                    )
    return spark.createDataFrame(rows, AUDIENCE_MAPPING)


def destination_rules(spark: SparkSession, config: Config) -> DataFrame:
    rows = [(d.id, d.sync_mode, d.batch_size, d.guards.min_audience_size, d.max_remove_fraction, d.guards.max_removes)
            for d in config.active_destinations]
    return spark.createDataFrame(rows, DESTINATION_RULES)


def _last_prepared(out: str) -> dict:
    """The last prepared run's figures the quality gate compares with (empty before the first)."""
    text = storage.read_text(storage.join(out, "state", "last_prepared.json"))
    return json.loads(text) if text else {}


def _check_request(spark: SparkSession, request: PrepareRequest) -> tuple[str, dict | None]:
    """Refuse requests that would write outside the run folder or over a finished run.

    Returns the run folder and, with `if_prepared="skip"`, the finished run's manifest if any.
    """
    if not RUN_ID.fullmatch(request.run_id):
        raise PrepareError(f"run id {request.run_id!r} must match {RUN_ID.pattern} (it becomes a path)")
    if storage.is_s3(request.out) and not storage.spark_reads_s3(spark):
        raise PrepareError(f"--out {request.out}: this Spark has no S3 filesystem (Glue and EMR do); write to a local path")
    if request.sub_buckets < 1:
        raise PrepareError(f"--sub-buckets must be at least 1, got {request.sub_buckets}")
    if not request.config.active_destinations:
        raise PrepareError(f"{request.config_source}: no active destination")
    run_dir = storage.join(request.out, "runs", request.run_id)
    finished = storage.read_text(storage.join(run_dir, "manifest.json"))
    if finished is not None and request.if_prepared != "skip":
        raise PrepareError(f"run {request.run_id} is already prepared ({run_dir}/manifest.json); choose another --run-id")
    return run_dir, json.loads(finished) if finished is not None else None


def _flagged_rows(spark: SparkSession, valid: DataFrame, opt_outs: DataFrame, broadcast_opt_outs: bool, config: Config) -> DataFrame:
    """Usable rows fanned out to their audiences with their consent signals, those consent removes flagged `opted_out`."""
    sources = {d: {signal: carried(column) for signal, column in columns.items()} for d, columns in config.consent_sources().items()}
    return (
        valid.select("user_id", "id_type", "segment_id", "id_normalized", *[carried(c) for c in config.consent_columns])
        .transform(map_to_audiences, audience_mapping(spark, config))
        .transform(with_member_consent, sources)
        .transform(mark_opted_out, opt_outs, broadcast_opt_outs)
    )


def write_batches(classified: DataFrame, rules: DataFrame, sub_buckets: int, path: str) -> None:
    """Whole batches per file (about TARGET_FILE_ROWS ids), grouped by destination, audience and op."""
    (
        assign_batches(classified, rules, sub_buckets, TARGET_FILE_ROWS)
        .write.mode("overwrite")
        .partitionBy("destination_id", "audience_id", "op")
        .parquet(path)
    )


def run_prepare(spark: SparkSession, request: PrepareRequest) -> dict:
    """Carry out one prepare run and return its summary (the manifest holds the detail)."""
    started = time.monotonic()
    run_dir, finished = _check_request(spark, request)
    if finished is not None:
        log_event("prepare.already_prepared", run_id=request.run_id)
        return {"status": "ALREADY_PREPARED", "run_id": request.run_id, "destinations": sorted(finished["destinations"])}
    config, out = request.config, request.out
    destinations = config.active_destinations
    destination_ids = [d.id for d in destinations]
    timer = PhaseTimer("prepare", run_id=request.run_id)
    log_event("prepare.start", run_id=request.run_id, destinations=destination_ids)
    # Each destination's head: the last run prepared for it, delivered or not (see snapshots);
    # read before any data, so a prepare that may not build on it stops before the work.
    try:
        baselines = {d: snapshots.baseline_for(out, d, request.run_id) for d in destination_ids}
    except snapshots.PrepareInProgress as error:
        raise PrepareError(str(error)) from None
    # A destination whose last run holds removals nobody has decided on is left out: a run
    # built on it could not know which members the destination keeps.
    blocked = {d: (b.run_id, waiting) for d, b in baselines.items() if b.run_id and (waiting := removals.undecided(out, b.run_id, d))}
    if blocked:
        message = "; ".join(f"{d}: run {run} holds removals of {audiences} (audience-relay approve-removals --run {run} "
                            f"--destination {d} [--reject])" for d, (run, audiences) in sorted(blocked.items()))
        if len(blocked) == len(destination_ids):
            raise PrepareError(f"run {request.run_id}: every destination waits for a decision on held removals: {message}")
        log_event("prepare.destinations_blocked", level="WARNING", run_id=request.run_id, blocked=sorted(blocked), note=message)
        config = config.restricted_to([d for d in destination_ids if d not in blocked])
        destinations, destination_ids = config.active_destinations, [d for d in destination_ids if d not in blocked]
        baselines = {d: b for d, b in baselines.items() if d not in blocked}

    # Every trigger (schedule, API, S3, CLI) comes through here: a half-written folder is never read.
    marker = require_completion_marker(request.input) if request.require_completion_marker else "not required"
    last_prepared = _last_prepared(out)
    # The normalized input feeds its counts (statistics, per-file counts, the quality gate's
    # figures: one aggregate), the rejected rows and the members: kept once rather than read and
    # normalized three times.
    normalized = (
        read_membership(spark, request.input, request.input_format, config.consent_columns)
        .transform(normalize_identifiers, config.defaults.default_country_code)
        .transform(flag_invalid_consent, tuple(carried(c) for c in config.consent_columns))
        .persist(LARGE_CACHE)
    )
    with timer.phase("read_normalize_quality"):
        with naming_unreadable_files(request.input):  # reads every input file, into the cache
            statistics = input_statistics(normalized)
        quality = check_input(statistics.profile, config.quality, last_prepared.get("input_rows"))
    raise_on_critical(quality, request.input)
    segment_stats, input_files = statistics.segments, statistics.files

    input_rows = statistics.rows
    # Rows of an id type that no destination takes are unusable everywhere: rejected too.
    accepted_anywhere = sorted({t for d in destinations for t in d.accepted_id_types})
    rejected_reasons = rejected_by_reason(segment_stats, accepted_anywhere)
    rejected_rows = sum(rejected_reasons.values())
    with timer.phase("write_rejected"):
        is_unusable = F.col("reject_reason").isNotNull() | ~F.col("id_type").isin(*accepted_anywhere)
        normalized.filter(is_unusable).withColumn(
            "reject_reason", F.coalesce("reject_reason", F.lit(ID_TYPE_NOT_ACCEPTED))
        ).select(*REJECTED.fieldNames(), *[F.col(carried(c)).alias(c) for c in config.consent_columns]).repartition(
            # Shuffled into few files, not merged: merging would read the whole cached input in as many tasks.
            max(1, math.ceil(rejected_rows / TARGET_FILE_ROWS))
        ).write.mode("overwrite").parquet(storage.join(run_dir, "rejected"))

    with timer.phase("read_consent"):
        consent = (read_consent(spark, request.consent, {d.id for d in config.destinations}, request.consent_format) if request.consent
                   else Consent(spark.createDataFrame([], CONSENT), {}))
        if consent.unknown_scopes:
            log_event("prepare.consent_unknown_scopes", level="WARNING", run_id=request.run_id, rows_by_scope=consent.unknown_scopes,
                      note="scopes that name no configured destination: counted in the manifest, not applied")
        opt_outs = consent_opt_outs(consent.rows, destination_ids).persist(StorageLevel.MEMORY_AND_DISK)
        opt_out_count = opt_outs.count()
    flagged = _flagged_rows(spark, normalized.filter(F.col("reject_reason").isNull()), opt_outs, opt_out_count <= BROADCAST_OPT_OUTS_MAX, config)
    try:
        previous = snapshots.read_previous(spark, out, {d: b.run_id for d, b in baselines.items()})
    except snapshots.SnapshotIncomplete as error:
        raise PrepareError(str(error)) from None
    rules = destination_rules(spark, config)
    # Members are computed once, into the cache; everything after reads them from there.
    # A few partitions per core, or one per 1M input rows if more (the snapshot is written by
    # merging them). Merging without a shuffle also runs the join in that many tasks; with
    # dynamic allocation, set spark.default.parallelism to the cores the job will have.
    slices = max(task_slices(spark), math.ceil(input_rows / TARGET_FILE_ROWS))
    # One aggregate of the flagged rows: the members, and the rows consent removed (withdrawn
    # members are removed in every sync mode; their rows are the consent gate's count).
    marked = mark_membership(flagged.transform(to_members), previous).coalesce(slices).persist(LARGE_CACHE)
    with timer.phase("members_and_delta"):
        audiences = audience_sizes(marked).collect()  # one row per audience
        sizes = spark.createDataFrame(audiences, AUDIENCE_SIZES)
        classified = classify_marked(marked, sizes, rules)
        member_stats = [
            MemberStat(r.destination_id, r.audience_id, r.status, r.members, r.rows)
            for r in classified.groupBy("destination_id", "audience_id", "status")
            .agg(F.count(F.lit(1)).alias("members"), F.sum("source_rows").alias("rows"))
            .collect()
        ]
    # Counted from the data (the flagged rows' aggregate), not as what is left of the mapped
    # rows: a row lost between here and the members then fails the accounting.
    consent_filtered = dict.fromkeys(destination_ids, 0)
    for audience in audiences:
        consent_filtered[audience.destination_id] += audience.withdrawn_rows
    opt_out_shares = {d.id: consent_filtered[d.id] / mapped for d in destinations
                      if (mapped := mapped_rows(d.accepted_id_types, d.mapped_segments, segment_stats))}
    normalized.unpersist()
    opt_outs.unpersist()
    try:
        consent_gate = check_opt_out_shares(opt_out_shares, last_prepared.get("opt_out_shares", {}),
                                            config.quality.max_opt_out_increase, request.consent or request.input, last_prepared.get("run_id"))
    except QualityError:
        marked.unpersist()   # a session that lives on (a notebook, the tests) keeps no cache of a refused run
        raise

    snapshot_members = sum(s.members for s in member_stats if s.status in SNAPSHOT_STATUSES)
    with timer.phase("write_snapshot"):
        # The members are already spread by key; merging partitions (no shuffle) sizes the files.
        classified.filter(F.col("status").isin(*SNAPSHOT_STATUSES)).select(SNAPSHOT.fieldNames()).coalesce(
            max(1, math.ceil(snapshot_members / TARGET_FILE_ROWS))
        ).write.mode("overwrite").partitionBy("destination_id").parquet(snapshots.run_snapshot_path(out, request.run_id))

    batches_dir = storage.join(run_dir, "batches")
    batches: list[dict] = []
    if any(s.members for s in member_stats if s.status in BATCHED_STATUSES):
        with timer.phase("batch_and_write"):
            write_batches(classified, rules, request.sub_buckets, batches_dir)
        with timer.phase("batch_checksums"):
            batches = batch_list(spark, batches_dir, request.run_id, {d.id: d.batch_size for d in destinations})
    else:  # nothing changed: still leave the run layout's batches/ folder, empty
        spark.createDataFrame([], BATCHED).write.mode("overwrite").parquet(batches_dir)
    marked.unpersist()

    report = {
        d.id: destination_report(d, segment_stats, [s for s in member_stats if s.destination_id == d.id], consent_filtered[d.id],
                                 batches, baselines[d.id].run_id)
        for d in destinations
    }
    for destination_id, section in report.items():
        if not section["accounting"]["reconciles"]:
            raise RuntimeError(f"accounting of {destination_id} does not reconcile: {section['accounting']}")
    seconds = round(time.monotonic() - started, 1)
    manifest = {
        "run_id": request.run_id,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": {"membership": request.input, "consent": request.consent, "config": request.config_source, "files": input_files,
                   "completion_marker": marker},
        "input_rows": input_rows,
        "rejected": {"rows": rejected_rows, "by_reason": rejected_reasons, "path": "rejected/"},
        "consent": {"unknown_scopes": consent.unknown_scopes},
        "quality": {"success": quality.success, "expectations": [*quality.expectations, consent_gate]},
        "destinations": report,
        # Left out of this run: their last run holds removals nobody has decided on.
        "blocked": {d: {"run_id": run, "audiences": audiences} for d, (run, audiences) in sorted(blocked.items())},
        "batch_checksum": CHECKSUM_RULE,
        "batches": batches,
        "snapshot": {"path": "snapshot/", "members": snapshot_members, "committed": False},
        "timing": {"seconds": seconds, "phases": timer.seconds},
    }
    for destination_id, baseline in baselines.items():  # before the manifest: a run without one is unfinished
        try:
            snapshots.advance_head(out, destination_id, request.run_id, baseline)
        except storage.Conflict:
            raise PrepareError(f"run {request.run_id}: another run was prepared for {destination_id} while this one ran; "
                               "prepare this run again (it then builds on that run)") from None
    manifest_uri = storage.join(run_dir, "manifest.json")
    storage.write_text(manifest_uri, json.dumps(manifest, indent=2, default=str) + "\n")
    storage.write_text(
        storage.join(out, "state", "last_prepared.json"),
        # Shares of destinations left out of this run are kept from before.
        json.dumps({"run_id": request.run_id, "input_rows": input_rows,
                    "opt_out_shares": last_prepared.get("opt_out_shares", {}) | opt_out_shares}) + "\n",
    )
    summary = {
        "status": "PREPARED",
        "run_id": request.run_id,
        "run_dir": run_dir,
        "manifest": manifest_uri,
        "input_rows": input_rows,
        "rejected_rows": rejected_rows,
        "batches": len(batches),
        "destinations": {
            d: {
                "add": r["accounting"]["members"].get("add", 0),
                "remove": r["accounting"]["members"].get("remove", 0),
                "batches": r["batches"],
                **({"removals_held": {a: h["removes"] for a, h in r["removals_held"].items()}} if r["removals_held"] else {}),
            }
            for d, r in report.items()
        },
        "seconds": seconds,
    }
    for destination_id, section in report.items():
        accounting = section["accounting"]
        log_event("prepare.destination_done", run_id=request.run_id, destination=destination_id, batches=section["batches"],
                  members=accounting["members"], rows=accounting["rows"], rejected_by_reason=accounting["rejected_by_reason"])
        if section["removals_held"]:
            log_event("prepare.removals_held", level="WARNING", run_id=request.run_id, destination=destination_id,
                      audiences=section["removals_held"], note="held until approve-removals approves or rejects them")
    log_event("prepare.done", **{k: v for k, v in summary.items() if k != "destinations"})
    emit_prepare_metrics(request.run_id, report, rejected_reasons)
    emit_job_metrics("prepare", request.run_id, seconds, InputRows=input_rows, RejectedRows=rejected_rows, BatchesPlanned=len(batches))
    return summary
