"""The quality gate: a verdict on the data, or a crash that says it is not one."""
import pytest

from audience_relay.pipeline.config import Quality
from audience_relay.pipeline.quality import QualityCheckCrashed, _raised, raise_on_critical, validate_input

SCHEMA = "user_id string, id_type string, id_value string, segment_id string, reject_reason string"


def test_clean_input_passes_and_too_many_rejects_fail(spark):
    good = spark.createDataFrame([("u1", "email", "a@x.com", "seg_1", None)] * 9 + [("u2", "phone", "1", "seg_1", "phone_too_short")], SCHEMA)
    assert validate_input(good, Quality(max_rejected_fraction=0.2), None).success
    verdict = validate_input(good, Quality(max_rejected_fraction=0.05), None)
    assert not verdict.success
    with pytest.raises(Exception, match="reject_reason"):
        raise_on_critical(verdict, "in.csv")


def test_a_check_that_cannot_run_is_a_crash_not_bad_input(spark):
    missing_segment = spark.createDataFrame([("u1", "email", "a@x.com", None)], "user_id string, id_type string, id_value string, reject_reason string")
    with pytest.raises(QualityCheckCrashed, match="could not run"):
        validate_input(missing_segment, Quality(), None)


def test_raised_errors_are_found_directly_or_per_metric():
    assert _raised(None) is None
    assert _raised({"raised_exception": False, "exception_message": None}) is None
    assert _raised({"raised_exception": True, "exception_message": "Py4JNetworkError"}) == "Py4JNetworkError"
    assert _raised({"('table.row_count', ...)": {"raised_exception": True, "exception_message": "lost executor"}}) == "lost executor"
