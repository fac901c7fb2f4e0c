"""Crash points for the reliability suite: kill the whole job, as a lost node would, at a named moment.

`AUDIENCE_RELAY_CRASH_AT=deliver.after_send:3` makes the third pass through
`crash_point("deliver.after_send")` in one process SIGKILL every process of the job's session:
the Python driver, Spark's JVM and its Python daemon and workers (which sit in a process group
of their own). The job must run as a session leader (`setsid`, `start_new_session=True`), as
the tests start it. Unset, which is always the case outside the tests, a crash point is one
environment lookup. The idea is FreeBSD's fail points and etcd's gofail; twenty lines of
stdlib do not justify a dependency.
"""
from __future__ import annotations

import os
import signal
import threading
from collections import Counter

CRASH_AT = "AUDIENCE_RELAY_CRASH_AT"
_hits: Counter = Counter()
_lock = threading.Lock()


def crash_point(name: str) -> None:
    spec = os.environ.get(CRASH_AT)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    with _lock:
        _hits[name] += 1
        due = _hits[name] >= int(nth or 1)
    if due:
        kill_session(os.getsid(0))


def session_members(session_id: int) -> list[int]:
    """Every live process whose session is `session_id` (Linux /proc)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == session_id:
                    members.append(int(entry))
            except (ProcessLookupError, PermissionError):
                continue
    return members


def kill_session(session_id: int) -> None:
    """SIGKILL the session's processes, the caller last: nothing gets to clean up or flush."""
    me = os.getpid()
    for pid in session_members(session_id):
        if pid != me:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if os.getsid(0) == session_id:
        os.kill(me, signal.SIGKILL)
