import json
import math
import time

import pytest

from audience_relay.connectors.delivery import BatchOutcome
from audience_relay.pipeline.metrics import (
    NAMESPACE, UNITS, Metric, MetricError, counts, delivery_tally, emf_records, emit_deliver_metrics, emit_job_metrics,
    emit_metrics, emit_prepare_metrics,
)


def assert_valid_emf(record: dict) -> None:
    """The spec's rules for one EMF document (what CloudWatch Logs checks before extracting)."""
    metadata = record["_aws"]
    assert isinstance(metadata["Timestamp"], int) and abs(metadata["Timestamp"] - time.time() * 1000) < 60_000  # ms, not s
    assert metadata["CloudWatchMetrics"]
    for directive in metadata["CloudWatchMetrics"]:
        assert isinstance(directive["Namespace"], str) and 1 <= len(directive["Namespace"]) <= 255
        assert 1 <= len(directive["Metrics"]) <= 100
        for dimension_set in directive["Dimensions"]:
            assert len(dimension_set) <= 30
            for name in dimension_set:
                assert isinstance(record[name], str) and record[name]
        for metric in directive["Metrics"]:
            value = record[metric["Name"]]
            assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            assert metric.get("Unit", "None") in UNITS


def emitted(capsys) -> list[dict]:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is exactly one JSON object
    for line, record in zip(lines, records):
        assert_valid_emf(record)
        assert '"phase"' not in line  # bench/measure.py reads lines with a "phase" member as phase timings
    return records


def test_a_metric_line_is_one_emf_document_with_values_dimensions_and_properties_at_the_top(capsys):
    emit_metrics(counts(BatchesSent=3, Retries=0) + [Metric("WaitedSeconds", 1.5, "Seconds")], {"Destination": "meta_ads"}, run_id="day1")
    (record,) = emitted(capsys)
    assert record["_aws"]["CloudWatchMetrics"] == [{
        "Namespace": NAMESPACE, "Dimensions": [["Destination"]],
        "Metrics": [{"Name": "BatchesSent", "Unit": "Count"}, {"Name": "Retries", "Unit": "Count"}, {"Name": "WaitedSeconds", "Unit": "Seconds"}],
    }]
    assert (record["Destination"], record["BatchesSent"], record["Retries"], record["WaitedSeconds"], record["run_id"]) == ("meta_ads", 3, 0, 1.5, "day1")


def test_more_than_100_metrics_become_several_documents():
    records = emf_records([Metric(f"M{i}", i) for i in range(250)], {"Job": "deliver"})
    assert [len(r["_aws"]["CloudWatchMetrics"][0]["Metrics"]) for r in records] == [100, 100, 50]
    assert records[2]["M249"] == 249 and "M0" not in records[2]
    for record in records:
        assert_valid_emf(record)


@pytest.mark.parametrize(
    "metrics, dimensions, properties, message",
    [
        ([Metric("A", float("nan"))], {"Job": "x"}, {}, "not a finite number"),
        ([Metric("A", True)], {"Job": "x"}, {}, "not a finite number"),
        ([Metric("A", "3")], {"Job": "x"}, {}, "not a finite number"),
        ([Metric("A", 1, "Rows")], {"Job": "x"}, {}, "not a CloudWatch unit"),
        ([Metric("A", 1), Metric("A", 2)], {"Job": "x"}, {}, "repeat"),
        ([Metric("A", 1)], {"Job": 3}, {}, "must be a non-empty string"),
        ([Metric("A", 1)], {"Job": "x"}, {"Job": "y"}, "named twice"),
        ([Metric("_aws", 1)], {"Job": "x"}, {}, "named twice"),
        ([Metric("A", 1)], {f"D{i}": "x" for i in range(31)}, {}, "at most 30"),
    ],
)
def test_lines_cloudwatch_would_drop_are_refused(metrics, dimensions, properties, message):
    with pytest.raises(MetricError, match=message):
        emf_records(metrics, dimensions, properties)


def _outcome(state, ids=100, attempts=1, retries=0, error=None, waited=0.0):
    return BatchOutcome("k", "google_dm", "a", "add", ids, state, attempts, retries, waited, error, None)


def test_the_delivery_tally_counts_this_runs_outcomes_and_a_quota_refusal_takes_no_quota():
    outcomes = [
        _outcome("delivered", ids=300, attempts=3, retries=2, waited=1.25),
        _outcome("delivered", ids=200),
        _outcome("failed", attempts=1, error="permanent: TOO_MANY_AUDIENCE_MEMBERS"),
        _outcome("deferred", attempts=1, error="daily quota 'google' exhausted for 2026-11-23; resumes at ..."),
        _outcome("deferred", attempts=0, error=None),  # deferred behind the exhausted quota: never attempted
    ]
    tally = delivery_tally({"status": "QUOTA_DEFERRED"}, outcomes, has_daily_quota=True)
    assert tally == {
        "batches_sent": 2, "batches_deferred": 2, "batches_failed": 1, "batches_fenced": 0, "deferrals": 1, "retries": 2,
        "requests": 5, "quota_used": 5, "ids_delivered": 500, "waited_seconds": 1.25,
    }
    assert delivery_tally({"status": "SUCCEEDED"}, [], has_daily_quota=False)["quota_used"] is None


def test_deliver_metrics_are_per_destination_with_the_run_id_as_a_property_not_a_dimension(capsys):
    tally = delivery_tally({"status": "QUOTA_DEFERRED"}, [_outcome("delivered", ids=7)], has_daily_quota=True)
    emit_deliver_metrics("day1", "google_dm", tally)
    emit_deliver_metrics("day1", "partner_sftp", {**tally, "quota_used": None})
    google, sftp = emitted(capsys)
    assert google["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Destination"]]
    assert (google["Destination"], google["run_id"], google["event"]) == ("google_dm", "day1", "deliver.metrics")
    assert {k: google[k] for k in ("BatchesSent", "BatchesDeferred", "BatchesFailed", "Deferrals", "Retries", "QuotaUsed", "IdsDelivered")} == {
        "BatchesSent": 1, "BatchesDeferred": 0, "BatchesFailed": 0, "Deferrals": 1, "Retries": 0, "QuotaUsed": 1, "IdsDelivered": 7}
    assert "QuotaUsed" not in sftp  # no daily quota: nothing to use up


def test_prepare_metrics_per_destination_per_reject_reason_and_for_the_job(capsys):
    report = {"meta_ads": {"batches": 3, "accounting": {"input_rows": 100, "rows": {"rejected": 12, "to_deliver": 70},
                                                         "members": {"add": 60, "remove": 4}}}}
    emit_prepare_metrics("day1", report, {"invalid_email": 5, "zero_maid": 2})
    emit_job_metrics("prepare", "day1", 12.5, InputRows=100, RejectedRows=7, BatchesPlanned=3)
    meta, email, maid, job = emitted(capsys)
    assert (meta["Destination"], meta["RejectedRows"], meta["BatchesPlanned"], meta["MembersAdded"], meta["MembersRemoved"]) == ("meta_ads", 12, 3, 60, 4)
    assert (email["Reason"], email["RejectedRows"], maid["Reason"], maid["RejectedRows"]) == ("invalid_email", 5, "zero_maid", 2)
    assert (job["Job"], job["JobSeconds"], job["InputRows"]) == ("prepare", 12.5, 100)
    assert job["_aws"]["CloudWatchMetrics"][0]["Metrics"][0] == {"Name": "JobSeconds", "Unit": "Seconds"}
