"""Data-quality gate on the input, with great-expectations, before anything deliverable is written.

The whole suite is validated in one call (each expectation costs Spark jobs). Critical
expectations stop the run; warnings are recorded in the manifest only. An expectation of
either kind that could not be computed is a crash, not a verdict.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame

from audience_relay.pipeline.config import Quality
from audience_relay.transforms.id_types import ID_TYPES

CRITICAL, WARNING = "critical", "warning"


class QualityError(RuntimeError):
    """A critical expectation failed; the message lists which and what was observed."""


class QualityCheckCrashed(RuntimeError):
    """An expectation could not be computed (Spark failed under it): no verdict on the data."""


def _raised(exception_info: dict | None) -> str | None:
    """The error message of an expectation that raised, if it did.

    great-expectations reports it either directly or per metric, keyed by metric id.
    """
    info = exception_info or {}
    for item in [info] if "raised_exception" in info else info.values():
        if isinstance(item, dict) and item.get("raised_exception"):
            return str(item.get("exception_message") or "no message")
    return None


@dataclass(frozen=True)
class QualityResult:
    success: bool
    expectations: list[dict]

    def failures(self, severity: str = CRITICAL) -> list[dict]:
        return [e for e in self.expectations if not e["success"] and e["severity"] == severity]


def _suite(quality: Quality, previous_rows: int | None) -> list:
    import great_expectations.expectations as gxe
    from great_expectations.expectations.metadata_types import FailureSeverity

    critical, warning = FailureSeverity.CRITICAL, FailureSeverity.WARNING
    required_share = 1.0 - quality.max_null_fraction
    suite = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1, severity=critical, description="input is not empty"),
        gxe.ExpectColumnValuesToNotBeNull(column="user_id", mostly=required_share, severity=critical),
        gxe.ExpectColumnValuesToNotBeNull(column="segment_id", mostly=required_share, severity=critical),
        gxe.ExpectColumnValuesToNotBeNull(column="id_type", mostly=required_share, severity=critical),
        gxe.ExpectColumnValuesToNotBeNull(column="id_value", mostly=required_share, severity=warning),
        gxe.ExpectColumnValuesToBeInSet(
            column="id_type", value_set=list(ID_TYPES), mostly=1.0 - quality.max_unknown_id_type_fraction, severity=critical
        ),
        gxe.ExpectColumnValuesToBeNull(
            column="reject_reason", mostly=1.0 - quality.max_rejected_fraction, severity=critical,
            description="share of rejected rows within the configured limit",
        ),
    ]
    band = quality.row_count_band
    if previous_rows and band:
        suite.append(
            gxe.ExpectTableRowCountToBeBetween(
                min_value=int(previous_rows * band.min_ratio), max_value=int(previous_rows * band.max_ratio),
                severity=critical, description=f"row count within {band.min_ratio}-{band.max_ratio}x the previous run ({previous_rows})",
            )
        )
    return suite


def validate_input(normalized: DataFrame, quality: Quality, previous_rows: int | None) -> QualityResult:
    """Validate the normalized membership frame (lower-cased id types, reject reasons)."""
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # tqdm bars would flood job logs
    batch = (
        context.data_sources.add_spark(name="membership")
        .add_dataframe_asset(name="input")
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": normalized})
    )
    suite = context.suites.add(gx.ExpectationSuite(name="membership_input", expectations=_suite(quality, previous_rows)))
    outcome = batch.validate(suite, result_format="BASIC")
    expectations = []
    for result in outcome.results:
        config = result.expectation_config
        error = _raised(result.exception_info)
        if error is not None:
            # Left as a failed expectation, it would read as bad input (observed None).
            raise QualityCheckCrashed(f"data-quality check {config.type} could not run: {error[:500]}")
        observed = result.result.get("observed_value", result.result.get("unexpected_percent"))
        expectations.append(
            {
                "expectation": config.type,
                "column": config.kwargs.get("column"),
                "severity": config.severity.value,
                "success": bool(result.success),
                "observed": observed,
                "unexpected_percent": result.result.get("unexpected_percent"),
                "kwargs": {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "column")},
            }
        )
    return QualityResult(success=all(e["success"] for e in expectations if e["severity"] == CRITICAL), expectations=expectations)


def raise_on_critical(result: QualityResult, source: str) -> None:
    failures = result.failures(CRITICAL)
    if failures:
        lines = [
            f"- {f['expectation']}" + (f" on {f['column']}" if f["column"] else "") + f": observed {f['observed']}, expected {f['kwargs']}"
            for f in failures
        ]
        raise QualityError(f"{source}: input failed {len(failures)} critical data-quality check(s); nothing was written:\n" + "\n".join(lines))


def check_opt_out_shares(shares: dict[str, float], previous: dict[str, float], max_increase: float | None, source: str,
                         previous_run: str | None) -> dict:
    """The consent gate: per destination, the share of its rows this run's consent opted out
    against the last run's. Returns the manifest's record; raises QualityError naming each
    destination over the bound (nothing has been written yet)."""
    over = {d: (share, previous[d]) for d, share in sorted(shares.items())
            if max_increase is not None and d in previous and share > previous[d] + max_increase}
    if over:
        lines = [f"- {d}: {share:.1%} of its rows opted out by this run's consent, {before:.1%} in run {previous_run}"
                 for d, (share, before) in over.items()]
        raise QualityError(f"{source}: consent opts out more than quality.max_opt_out_increase ({max_increase:.0%}) above the last "
                           "run's share; nothing was written. Check the consent file; if it is right, raise "
                           "quality.max_opt_out_increase for this run:\n" + "\n".join(lines))
    return {"expectation": "opt_out_share_increase", "severity": CRITICAL, "success": True, "observed": shares,
            "kwargs": {"max_increase": max_increase, "previous": previous, "previous_run": previous_run}}
