"""The normalized input's statistics, from one aggregate: what the accounting, the manifest's
per-file counts and the quality gate need of the input."""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame

from audience_relay.pipeline.accounting import SegmentStat
from audience_relay.pipeline.quality import InputProfile
from audience_relay.transforms.input_counts import FILE_GRAIN, SEGMENT_GRAIN, input_counts


@dataclass(frozen=True)
class InputStatistics:
    segments: list[SegmentStat]
    files: dict[str, int]       # rows per input file, by path
    profile: InputProfile

    @property
    def rows(self) -> int:
        return self.profile.rows


def input_statistics(normalized: DataFrame) -> InputStatistics:
    """One Spark job over `normalized` (its first, when it is being cached)."""
    counts = normalized.transform(input_counts).collect()
    segments = [r for r in counts if r.grain == SEGMENT_GRAIN]
    stats = [SegmentStat(r.id_type, r.segment_id, r.reject_reason, r.rows) for r in segments]
    files = {r.source_file: r.rows for r in sorted((r for r in counts if r.grain == FILE_GRAIN), key=lambda r: r.source_file)}
    return InputStatistics(stats, files, InputProfile.of(stats, sum(r.null_user_ids for r in segments), sum(r.null_id_values for r in segments)))
