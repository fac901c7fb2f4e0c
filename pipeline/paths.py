"""Values that become paths: run ids, path segments and run-relative files, checked before use.

A run id, a destination or audience name, a batch's file in a manifest or an S3 object key
ends up in a local path, an S3 key, an SFTP remote path or a URL path. Each is checked where
it enters a path, against a rule that cannot leave the root it is joined to: no `..` or `.`
segment, no separator inside a segment, nothing absolute, no scheme. The error names the value
and where it came from (a manifest, a pointer file, a command-line option).
"""
from __future__ import annotations

import re

# Run ids become paths and execution names (`<run_id>-<destination>-<n>` within 80 characters).
# Always `fullmatch`: with `match`, `$` lets a trailing newline through ("r1\n").
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
# One path segment of our own making (destination, audience, op, batch names): no separator,
# no leading dot (so never `.` or `..`), no control characters.
SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=:-]{0,254}")


class UnsafePath(ValueError):
    """A value that would become a path outside its root; the message names it and its source."""


def run_id(value: object, where: str) -> str:
    if not isinstance(value, str) or not RUN_ID.fullmatch(value):
        raise UnsafePath(f"{where}: run id {value!r} must match {RUN_ID.pattern} (it becomes a path)")
    return value


def segment(value: object, where: str) -> str:
    """`value` as one path segment (a folder or file name), or UnsafePath."""
    if not isinstance(value, str) or not SEGMENT.fullmatch(value):
        raise UnsafePath(f"{where}: {value!r} cannot be a path segment (it must match {SEGMENT.pattern})")
    return value


def relative_under(value: object, folder: str, where: str) -> str:
    """`value` as a relative POSIX path inside `folder` (`batches/...`), or UnsafePath.

    Refuses absolute paths, URIs (`s3://...`, `file:...`), backslashes, and `.`, `..` or empty
    segments, so that joining it to its root cannot name anything outside `folder`.
    """
    if not isinstance(value, str):
        raise UnsafePath(f"{where}: {value!r} is not a relative path")
    parts = value.split("/")
    unsafe = (
        value.startswith("/") or ":" in parts[0] or "\\" in value or any(ord(c) < 32 for c in value)
        or any(p in ("", ".", "..") for p in parts) or parts[0] != folder or len(parts) < 2
    )
    if unsafe:
        raise UnsafePath(f"{where}: {value!r} is not a relative path inside {folder}/ (no '..', '.', absolute path or URI)")
    return value
