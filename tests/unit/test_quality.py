"""The quality gate: great-expectations' verdicts, from the counts prepare takes anyway.

great-expectations is the reference: its own validation of the same rows (each metric its own
Spark job, as prepare ran it before) must give the same verdict, observed value and unexpected
percentage as the gate over the one aggregate."""
import logging

import pytest

from audience_relay.pipeline.config import Quality, RowCountBand
from audience_relay.pipeline.input_statistics import input_statistics
from audience_relay.pipeline.quality import QualityError, check_input, raise_on_critical

SCHEMA = "user_id string, id_type string, id_value string, segment_id string, reject_reason string, source_file string"
CLEAN = ("u1", "email", "a@x.com", "seg_1", None, "f1")


def great_expectations_verdicts(frame, quality: Quality, previous_rows: int | None) -> list[dict]:
    """great-expectations' validation of `frame` with the gate's suite, in the manifest's form."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.expectations.metadata_types import FailureSeverity

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    critical, warning = FailureSeverity.CRITICAL, FailureSeverity.WARNING
    required = 1.0 - quality.max_null_fraction
    suite = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1, severity=critical),
        gxe.ExpectColumnValuesToNotBeNull(column="user_id", mostly=required, severity=critical),
        gxe.ExpectColumnValuesToNotBeNull(column="segment_id", mostly=required, severity=critical),
        gxe.ExpectColumnValuesToNotBeNull(column="id_type", mostly=required, severity=critical),
        gxe.ExpectColumnValuesToNotBeNull(column="id_value", mostly=required, severity=warning),
        gxe.ExpectColumnValuesToBeInSet(column="id_type", value_set=["email", "phone", "maid", "external_id"],
                                        mostly=1.0 - quality.max_unknown_id_type_fraction, severity=critical),
        gxe.ExpectColumnValuesToBeNull(column="reject_reason", mostly=1.0 - quality.max_rejected_fraction, severity=critical),
    ]
    band = quality.row_count_band
    if previous_rows and band:
        suite.append(gxe.ExpectTableRowCountToBeBetween(min_value=int(previous_rows * band.min_ratio),
                                                        max_value=int(previous_rows * band.max_ratio), severity=critical))
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (context.data_sources.add_spark(name="membership").add_dataframe_asset(name="input")
             .add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame}))
    outcome = batch.validate(context.suites.add(gx.ExpectationSuite(name="membership_input", expectations=suite)), result_format="BASIC")
    return [{"expectation": r.expectation_config.type, "column": r.expectation_config.kwargs.get("column"),
             "severity": r.expectation_config.severity.value, "success": bool(r.success),
             "observed": r.result.get("observed_value", r.result.get("unexpected_percent")),
             "unexpected_percent": r.result.get("unexpected_percent"),
             "kwargs": {k: v for k, v in r.expectation_config.kwargs.items() if k not in ("batch_id", "column")}} for r in outcome.results]


def gate(frame, quality: Quality, previous_rows: int | None = None):
    return check_input(input_statistics(frame).profile, quality, previous_rows)


CASES = {
    "clean": ([CLEAN] * 9 + [("u2", "phone", "1", "seg_1", "invalid_phone", "f2")], Quality(max_rejected_fraction=0.2), None),
    "too many rejected": ([CLEAN] * 9 + [("u2", "phone", "1", "seg_1", "invalid_phone", "f2")], Quality(max_rejected_fraction=0.05), None),
    "nulls at the limit and over it": ([CLEAN] * 98 + [(None, "email", None, "seg_1", "missing_user_id", "f1"),
                                                       ("u3", None, "x", None, "missing_id_type", "f1")], Quality(max_null_fraction=0.01), None),
    "unknown id types, nulls not counted": ([CLEAN] * 6 + [("u4", "fax", "1", "s", "unknown_id_type", "f1")] * 2
                                            + [("u5", None, "1", "s", "missing_id_type", "f1")] * 2, Quality(max_null_fraction=0.5), None),
    "no id type at all": ([("u5", None, "1", "s", "missing_id_type", "f1")] * 3, Quality(), None),
    "row count out of the band": ([CLEAN] * 10, Quality(row_count_band=RowCountBand(min_ratio=0.5, max_ratio=2.0)), 100),
    "row count within the band": ([CLEAN] * 10, Quality(row_count_band=RowCountBand(min_ratio=0.5, max_ratio=2.0)), 12),
    "empty": ([], Quality(), None),
}


@pytest.mark.parametrize("case", CASES)
def test_the_gate_gives_great_expectations_verdicts(spark, case):
    rows, quality, previous_rows = CASES[case]
    frame = spark.createDataFrame(rows, SCHEMA)
    ours = gate(frame, quality, previous_rows)
    expected = great_expectations_verdicts(frame, quality, previous_rows)
    assert sorted(ours.expectations, key=repr) == sorted(expected, key=repr)   # percentages computed the same way: equal, not close
    assert ours.success == all(e["success"] for e in expected if e["severity"] == "critical")


def test_a_critical_failure_stops_the_run_naming_the_check_and_what_was_observed(spark):
    rows, quality, _ = CASES["too many rejected"]
    verdict = gate(spark.createDataFrame(rows, SCHEMA), quality)
    assert not verdict.success
    with pytest.raises(QualityError, match=r"(?s)in.csv: input failed 1 critical .*expect_column_values_to_be_null on reject_reason: observed 10.0, expected \{'mostly': 0.95\}"):
        raise_on_critical(verdict, "in.csv")


def test_the_statistics_count_each_file_and_segment_once(spark):
    rows, _, _ = CASES["nulls at the limit and over it"]
    statistics = input_statistics(spark.createDataFrame(rows, SCHEMA))
    assert statistics.files == {"f1": 100} and statistics.rows == 100
    assert sorted(((s.id_type, s.segment_id, s.reject_reason, s.rows) for s in statistics.segments), key=repr) == [
        ("email", "seg_1", "missing_user_id", 1), ("email", "seg_1", None, 98), (None, None, "missing_id_type", 1)]
    assert statistics.profile.nulls == {"user_id": 1, "segment_id": 1, "id_type": 1, "id_value": 1}
