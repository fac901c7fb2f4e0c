"""The membership data contract's file formats and column names, in plain Python.

Prepare reads inputs with Spark (`pipeline.inputs`, `transforms.schemas`); the ingest Lambda checks
each landed file without Spark (`orchestration.file_checks`). Both take the formats and the
columns from here, so a file the Lambda admits is one prepare can read.
"""
from __future__ import annotations

import re

REQUIRED_COLUMNS = ("user_id", "id_type", "id_value", "segment_id")
OPTIONAL_COLUMNS = ("updated_at",)

# File name ending -> format; a trailing `.gz` means gzip-compressed text.
FORMATS = {
    r"\.parquet$": "parquet",
    r"\.csv(\.gz)?$": "csv",
    r"\.(jsonl|ndjson|json)(\.gz)?$": "jsonl",
}

# The names an error may quote. A "header" that is really data (a CSV file without a header
# line, a JSON line that is an array) would otherwise quote identifiers, and an external id or
# a user name can look like any column name: names outside the contract are counted, not shown.
KNOWN_COLUMNS = frozenset(REQUIRED_COLUMNS + OPTIONAL_COLUMNS + ("scope",))


def format_of(name: str) -> str | None:
    """The format a file name says, or None."""
    for pattern, data_format in FORMATS.items():
        if re.search(pattern, name):
            return data_format
    return None


def column_names(found: list) -> tuple[list[str], str]:
    """The names an error may show, and a note on those it may not (they look like data)."""
    shown = [c for c in found if c in KNOWN_COLUMNS]
    hidden = len(found) - len(shown)
    return shown, f" and {hidden} other name(s), not shown (they may be data, not a header)" if hidden else ""


def missing_columns_error(found: list, required: tuple[str, ...] = REQUIRED_COLUMNS) -> str | None:
    """'missing required column(s) [...]; found [...]', or None when every required column is there."""
    missing = [c for c in required if c not in found]
    if not missing:
        return None
    shown, others = column_names(found)
    return f"missing required column(s) {missing}; found {shown}{others}"
