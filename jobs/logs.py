"""Structured JSON log lines on stderr. Callers pass counts and ids, never raw identifiers."""
import json
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone


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
