"""CloudWatch metrics as embedded metric format (EMF) log lines, one JSON object per line on stderr.

An EMF line is a structured log line that also tells CloudWatch Logs which of its members are
metrics: `_aws.CloudWatchMetrics` names the namespace, the dimension sets and the metrics, and
the values are the line's own top-level members (spec:
https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html).
CloudWatch Logs extracts the metrics from any log event that is exactly one such JSON object,
so the Glue job's log streams carry them without a PutMetricData call or an agent.

Written here rather than with the `aws-embedded-metrics` package: that library is built around
an asynchronous flush (`metric_scope`, an event loop) and sends to the CloudWatch agent's
socket unless its environment is detected as Lambda or forced to `Local`; it also adds its own
default dimensions (ServiceName, ServiceType, LogGroup). A Glue or EMR driver has no agent, and
the jobs emit a handful of lines once, at the end: the format is a dozen lines of JSON, which
this module writes and checks against the spec's rules (names, units, numeric values, string
dimension values, at most 100 metrics per directive) with no new runtime dependency.

The lines go to stderr with the jobs' other structured lines (`pipeline.logs`): stdout carries the
job's JSON summary, which callers parse. Dimensions are low-cardinality (destination, job,
reject reason); the run id is a plain property, searchable in Logs Insights but not a metric
dimension (one new metric per run would be expensive and unusable for alarms). Values are
counts and seconds only: never an identifier.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Iterable, Mapping

NAMESPACE = "AudienceRelay"
MAX_METRICS_PER_DIRECTIVE = 100
MAX_DIMENSIONS_PER_SET = 30
# The units CloudWatch accepts (MetricDatum.Unit).
UNITS = frozenset(
    "Seconds Microseconds Milliseconds Bytes Kilobytes Megabytes Gigabytes Terabytes Bits Kilobits Megabits Gigabits "
    "Terabits Percent Count Bytes/Second Kilobytes/Second Megabytes/Second Gigabytes/Second Terabytes/Second "
    "Bits/Second Kilobits/Second Megabits/Second Gigabits/Second Terabits/Second Count/Second None".split()
)


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    unit: str = "Count"


class MetricError(ValueError):
    """A metric line would break the EMF spec (CloudWatch would drop it silently)."""


def _check(metrics: list[Metric], dimensions: Mapping[str, str], properties: Mapping[str, object]) -> None:
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        raise MetricError(f"metric names repeat: {sorted(n for n in set(names) if names.count(n) > 1)}")
    if len(dimensions) > MAX_DIMENSIONS_PER_SET:
        raise MetricError(f"{len(dimensions)} dimensions; a dimension set holds at most {MAX_DIMENSIONS_PER_SET}")
    for metric in metrics:
        if not 1 <= len(metric.name) <= 1024:
            raise MetricError(f"metric name {metric.name!r}: 1 to 1024 characters")
        if metric.unit not in UNITS:
            raise MetricError(f"metric {metric.name}: unit {metric.unit!r} is not a CloudWatch unit")
        if isinstance(metric.value, bool) or not isinstance(metric.value, (int, float)) or not math.isfinite(metric.value):
            raise MetricError(f"metric {metric.name}: value {metric.value!r} is not a finite number")
    for name, value in dimensions.items():
        if not isinstance(value, str) or not value:
            raise MetricError(f"dimension {name}: value {value!r} must be a non-empty string")
    members = [set(names), set(dimensions), set(properties) | {"_aws"}]
    twice = sorted((members[0] & members[1]) | (members[0] & members[2]) | (members[1] & members[2]))
    if twice:
        raise MetricError(f"members named twice (as metric, dimension or property): {twice}")


def emf_records(
    metrics: Iterable[Metric],
    dimensions: Mapping[str, str],
    properties: Mapping[str, object] | None = None,
    namespace: str = NAMESPACE,
    timestamp_ms: int | None = None,
) -> list[dict]:
    """The EMF documents for these metrics under one dimension set: one per 100 metrics."""
    metrics, properties = list(metrics), dict(properties or {})
    _check(metrics, dimensions, properties)
    timestamp = int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms)
    records = []
    for start in range(0, len(metrics), MAX_METRICS_PER_DIRECTIVE):
        chunk = metrics[start:start + MAX_METRICS_PER_DIRECTIVE]
        directive = {
            "Namespace": namespace,
            "Dimensions": [sorted(dimensions)],
            "Metrics": [{"Name": m.name, "Unit": m.unit} for m in chunk],
        }
        records.append({
            "_aws": {"Timestamp": timestamp, "CloudWatchMetrics": [directive]},
            **properties,
            **dimensions,
            **{m.name: m.value for m in chunk},
        })
    return records


def emit_metrics(metrics: Iterable[Metric], dimensions: Mapping[str, str], **properties) -> None:
    """Write the metrics as EMF lines on stderr (see the module docstring for why stderr)."""
    for record in emf_records(metrics, dimensions, properties):
        print(json.dumps(record, separators=(",", ":")), file=sys.stderr, flush=True)


def counts(unit: str = "Count", **values: float) -> list[Metric]:
    """`counts(BatchesSent=3, Retries=0)` -> metrics of one unit, in the order given."""
    return [Metric(name, value, unit) for name, value in values.items()]


# Each attempt takes one request from the daily quota before it is sent; an attempt the quota
# refused took none. The engine records that refusal with QuotaExhausted's message.
QUOTA_REFUSAL_PREFIX = "daily quota "


def delivery_tally(entry: dict, outcomes: list, has_daily_quota: bool) -> dict:
    """What one deliver run did for one destination, from its summary entry and this run's outcomes."""
    attempts = sum(o.attempts for o in outcomes)
    refused = sum(1 for o in outcomes if o.state == "deferred" and o.attempts and (o.error or "").startswith(QUOTA_REFUSAL_PREFIX))
    return {
        "batches_sent": sum(1 for o in outcomes if o.state == "delivered"),
        "batches_deferred": sum(1 for o in outcomes if o.state == "deferred"),
        "batches_failed": sum(1 for o in outcomes if o.state in ("failed", "unrecorded")),
        "batches_fenced": sum(1 for o in outcomes if o.state == "fenced"),
        "deferrals": 1 if entry["status"] == "QUOTA_DEFERRED" else 0,
        "retries": sum(o.retries for o in outcomes),
        "requests": attempts - refused,
        "quota_used": attempts - refused if has_daily_quota else None,
        "ids_delivered": sum(o.ids for o in outcomes if o.state == "delivered"),
        "waited_seconds": round(sum(o.waited_seconds for o in outcomes), 3),
    }


def emit_deliver_metrics(run_id: str, destination_id: str, tally: dict) -> None:
    metrics = counts(
        BatchesSent=tally["batches_sent"], BatchesDeferred=tally["batches_deferred"], BatchesFailed=tally["batches_failed"],
        Deferrals=tally["deferrals"], Retries=tally["retries"], Requests=tally["requests"], IdsDelivered=tally["ids_delivered"],
    )
    if tally["quota_used"] is not None:
        metrics.append(Metric("QuotaUsed", tally["quota_used"]))
    metrics.append(Metric("WaitedSeconds", tally["waited_seconds"], "Seconds"))
    emit_metrics(metrics, {"Destination": destination_id}, event="deliver.metrics", run_id=run_id)


def emit_prepare_metrics(run_id: str, report: dict, rejected_by_reason: dict[str, int]) -> None:
    """Per destination (rows rejected for it, batches planned), then per reject reason over the run
    (rows no destination can use; `id_type_not_accepted` there is an id type none accepts)."""
    for destination_id, section in report.items():
        accounting = section["accounting"]
        metrics = counts(
            RejectedRows=accounting["rows"]["rejected"], BatchesPlanned=section["batches"],
            RowsToDeliver=accounting["rows"]["to_deliver"], MembersAdded=accounting["members"].get("add", 0),
            MembersRemoved=accounting["members"].get("remove", 0),
        )
        emit_metrics(metrics, {"Destination": destination_id}, event="prepare.metrics", run_id=run_id)
    for reason, rows in rejected_by_reason.items():
        emit_metrics(counts(RejectedRows=rows), {"Reason": reason}, event="prepare.metrics", run_id=run_id)


def emit_job_metrics(job: str, run_id: str, seconds: float, **values: float) -> None:
    """One line per job run: its wall time and run-wide counts, under the `Job` dimension."""
    emit_metrics([Metric("JobSeconds", seconds, "Seconds"), *counts(**values)], {"Job": job}, event=f"{job}.metrics", run_id=run_id)
