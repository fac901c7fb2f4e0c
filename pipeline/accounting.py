"""Per-destination accounting: every input row counted exactly once, and proof that it adds up.

For one destination an input row is, in this order of precedence:
rejected (unusable identifier or an id type the destination does not accept), unmapped (its
segment feeds none of the destination's audiences), consent-filtered, or part of a member that
is to be delivered (`add`), unchanged since the last snapshot, or pending (held back by a guard).
Removes are members the destination holds that no input row supports any more, so they are
reported as members, not rows.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from audience_relay.transforms.delta import ADD, HELD, UNCHANGED

ID_TYPE_NOT_ACCEPTED = "id_type_not_accepted"


@dataclass(frozen=True)
class SegmentStat:
    """Input rows per (id type, segment, reject reason): all the accounting needs of the input."""

    id_type: str | None
    segment_id: str | None
    reject_reason: str | None
    rows: int


@dataclass(frozen=True)
class MemberStat:
    destination_id: str
    audience_id: str
    status: str
    members: int
    rows: int


def mapped_rows(accepted_id_types: tuple[str, ...], mapped_segments: set[str], segment_stats: list[SegmentStat]) -> int:
    """Usable rows of an accepted id type whose segment feeds one of the destination's audiences."""
    return sum(s.rows for s in segment_stats
               if s.reject_reason is None and s.id_type in accepted_id_types and s.segment_id in mapped_segments)


def destination_accounting(
    accepted_id_types: tuple[str, ...],
    mapped_segments: set[str],
    segment_stats: list[SegmentStat],
    member_stats: list[MemberStat],
    consent_filtered: int,
) -> dict:
    """Row accounting for one destination; `member_stats` must be that destination's only.

    Every count comes from the data, `consent_filtered` too (the rows the consent step flagged),
    so the sum can fall short as well as over: a row lost between mapping and members shows.
    """
    input_rows = sum(s.rows for s in segment_stats)
    rejected: Counter[str] = Counter()
    unmapped = mapped_rows = 0
    for stat in segment_stats:
        if stat.reject_reason is not None:
            rejected[stat.reject_reason] += stat.rows
        elif stat.id_type not in accepted_id_types:
            rejected[ID_TYPE_NOT_ACCEPTED] += stat.rows
        elif stat.segment_id not in mapped_segments:
            unmapped += stat.rows
        else:
            mapped_rows += stat.rows
    rows_by_status: Counter[str] = Counter()
    members_by_status: Counter[str] = Counter()
    for stat in member_stats:
        rows_by_status[stat.status] += stat.rows
        members_by_status[stat.status] += stat.members
    rows = {
        "to_deliver": rows_by_status[ADD],
        "unchanged": rows_by_status[UNCHANGED],
        "pending": rows_by_status[HELD],
        "consent_filtered": consent_filtered,
        "unmapped": unmapped,
        "rejected": sum(rejected.values()),
    }
    return {
        "input_rows": input_rows,
        "rows": rows,
        "rejected_by_reason": dict(sorted(rejected.items())),
        "members": {status: members_by_status[status] for status in sorted(members_by_status)},
        "reconciles": sum(rows.values()) == input_rows,
    }
