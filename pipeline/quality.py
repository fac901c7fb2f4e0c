"""Data-quality gate on the input, before anything deliverable is written.

The gate judges the counts prepare takes of the normalized input anyway (transforms/input_counts.py,
one aggregate), so it adds no pass over the data. Its expectations and their verdicts are
great-expectations' (the same names, `mostly` arithmetic and observed values; the unit tests hold
them to great-expectations run on the same rows), evaluated here because great-expectations
computes each metric with its own Spark jobs over the data. Critical expectations stop the run;
warnings are recorded in the manifest only.
"""
from __future__ import annotations

from dataclasses import dataclass

from audience_relay.pipeline.accounting import SegmentStat
from audience_relay.pipeline.config import Quality
from audience_relay.transforms.id_types import ID_TYPES

CRITICAL, WARNING = "critical", "warning"


class QualityError(RuntimeError):
    """A critical expectation failed; the message lists which and what was observed."""


@dataclass(frozen=True)
class InputProfile:
    """What the gate judges: the normalized input's rows and their nulls per column."""

    rows: int
    nulls: dict[str, int]          # user_id, segment_id, id_type, id_value
    unknown_id_types: int          # non-null id types outside ID_TYPES
    rejected: int                  # rows with a reject reason

    @classmethod
    def of(cls, segment_stats: list[SegmentStat], null_user_ids: int, null_id_values: int) -> InputProfile:
        """From the per-segment statistics (id type and segment are their keys) and the two nulls they do not key."""
        rows = sum(s.rows for s in segment_stats)
        return cls(
            rows=rows,
            nulls={"user_id": null_user_ids, "segment_id": sum(s.rows for s in segment_stats if s.segment_id is None),
                   "id_type": sum(s.rows for s in segment_stats if s.id_type is None), "id_value": null_id_values},
            unknown_id_types=sum(s.rows for s in segment_stats if s.id_type is not None and s.id_type not in ID_TYPES),
            rejected=sum(s.rows for s in segment_stats if s.reject_reason is not None),
        )


@dataclass(frozen=True)
class QualityResult:
    success: bool
    expectations: list[dict]

    def failures(self, severity: str = CRITICAL) -> list[dict]:
        return [e for e in self.expectations if not e["success"] and e["severity"] == severity]


def _row_count(rows: int, min_value: int, max_value: int | None = None) -> dict:
    success = rows >= min_value and (max_value is None or rows <= max_value)
    kwargs = {"min_value": min_value, **({"max_value": max_value} if max_value is not None else {})}
    return _verdict("expect_table_row_count_to_be_between", None, CRITICAL, success, rows, None, kwargs)


def _share(expectation: str, column: str, considered: int, unexpected: int, mostly: float, severity: str, **extra) -> dict:
    """A column-map expectation: at least `mostly` of the `considered` rows are as expected (vacuously
    true over none); the observed value is the unexpected percentage of them."""
    success = considered == 0 or (considered - unexpected) / considered >= mostly
    percent = unexpected / considered * 100 if considered else None
    return _verdict(expectation, column, severity, success, percent, percent, {"mostly": mostly, **extra})


def _verdict(expectation: str, column: str | None, severity: str, success: bool, observed, unexpected_percent, kwargs: dict) -> dict:
    return {"expectation": expectation, "column": column, "severity": severity, "success": success, "observed": observed,
            "unexpected_percent": unexpected_percent, "kwargs": kwargs}


def check_input(profile: InputProfile, quality: Quality, previous_rows: int | None) -> QualityResult:
    """The gate's expectations on the input's counts, in the manifest's form."""
    rows, nulls = profile.rows, profile.nulls
    required_share = 1.0 - quality.max_null_fraction
    expectations = [
        _row_count(rows, 1),   # the input is not empty
        *[_share("expect_column_values_to_not_be_null", column, rows, nulls[column], required_share, severity)
          for column, severity in (("user_id", CRITICAL), ("segment_id", CRITICAL), ("id_type", CRITICAL), ("id_value", WARNING))],
        # Over the rows that have an id type: a null one is the null check's to judge.
        _share("expect_column_values_to_be_in_set", "id_type", rows - nulls["id_type"], profile.unknown_id_types,
               1.0 - quality.max_unknown_id_type_fraction, CRITICAL, value_set=list(ID_TYPES)),
        # The share of rejected rows within the configured limit.
        _share("expect_column_values_to_be_null", "reject_reason", rows, profile.rejected, 1.0 - quality.max_rejected_fraction, CRITICAL),
    ]
    band = quality.row_count_band
    if previous_rows and band:
        # Within min_ratio-max_ratio times the previous run's rows.
        expectations.append(_row_count(rows, int(previous_rows * band.min_ratio), int(previous_rows * band.max_ratio)))
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
