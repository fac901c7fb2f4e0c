"""Structured JSON log lines on stderr. Callers pass counts and ids, never raw identifiers."""
import json
import sys
from datetime import datetime, timezone


def log_event(event: str, level: str = "INFO", **fields) -> None:
    record = {"ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "level": level, "event": event, **fields}
    print(json.dumps(record, default=str), file=sys.stderr, flush=True)
