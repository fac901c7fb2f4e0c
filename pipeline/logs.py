"""Structured JSON log lines on stderr. Callers pass counts and ids, never raw identifiers."""
import json
import re
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone


# What Spark's log layout redacts (pipeline/log4j2-redacting.properties), and MAIDs: free text that
# may quote a row (a traceback, a task failure) passes through `redact_text` before it is shown.
_FREE_TEXT_IDENTIFIERS = (
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"), "<email>"),
    (re.compile(r"\b[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b"), "<maid>"),
    (re.compile(r"[+(]?[0-9](?:[ ().+-]{0,2}[0-9]){6,}"), "<digits>"),
)


def redact_text(text: str) -> str:
    """`text` with emails, MAIDs and phone-like digit runs (7 digits or more) replaced."""
    for pattern, replacement in _FREE_TEXT_IDENTIFIERS:
        text = pattern.sub(replacement, text)
    return text


def log_event(event: str, level: str = "INFO", **fields) -> None:
    record = {"ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "level": level, "event": event, **fields}
    print(json.dumps(record, default=str), file=sys.stderr, flush=True)


class PhaseTimer:
    """Wall time of each phase of a job, logged as it ends and kept for the run summary.

    Spark is lazy: a phase's time is the time of the actions inside it, including the work of
    earlier lazy steps they trigger.
    """

    def __init__(self, job: str, **fields) -> None:
        self.job, self.fields, self.seconds = job, fields, {}

    @contextmanager
    def phase(self, name: str):
        started = time.monotonic()
        yield
        self.seconds[name] = round(time.monotonic() - started, 2)
        log_event(f"{self.job}.phase", phase=name, seconds=self.seconds[name], **self.fields)
