"""`audience-relay report`: a run's row accounting per destination, on the terminal and as HTML.

DESIGN.md's promise, shown: for each destination every input row is counted once as delivered,
pending, unchanged since the last snapshot, filtered by consent, unmapped or rejected, and
these sum to the input. The report reads only what the jobs wrote under `<out>/runs/<run>/`:
`manifest.json` (accounting as prepared, rejected rows by reason), the delivery summaries
(`delivery/<destination>/summary.json`, else the run-wide `delivery/summary.json`) and the
delivery outcomes (`delivery/_outcomes/<time>-<destinations>/*.parquet`, one row per batch per
deliver attempt), read with pyarrow: no Spark. Local paths and `s3://` alike.

The HTML page is self-contained (inline SVG charts, no script, no network). It holds counts,
run, destination, audience and batch names only: never a member's identifier, and not the
outcomes' error texts (`dead-letters` lists those).
"""
from __future__ import annotations

import argparse
import html
import json
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq

from audience_relay.pipeline import paths, removals, storage
from audience_relay.pipeline.errors import UsageError
from audience_relay.pipeline.paths import RUN_ID

OUTCOME_FOLDER_TIME = "%Y%m%dT%H%M%S%fZ"  # deliver names each attempt's outcome folder <time>-<destinations>
OUTCOME_COLUMNS = ["destination_id", "state", "retries"]  # never `error`: the report shows counts only
ROW_KINDS = ("delivered", "pending", "unchanged", "consent_filtered", "unmapped", "rejected")
ROW_LABELS = {"consent_filtered": "consent"}
NOT_DELIVERED = "NOT_DELIVERED"


class ReportError(UsageError):
    """The run cannot be reported: a bad run id, or its files are missing or unreadable."""


@dataclass(frozen=True)
class DestinationLine:
    """One destination's accounting: the rows by kind, and its delivery so far."""

    destination: str
    input_rows: int
    rows: dict[str, int]  # ROW_KINDS -> rows
    rejected_by_reason: dict[str, int]
    status: str  # the delivery summary's status, or NOT_DELIVERED before any delivery
    batches_planned: int
    batches: dict[str, int]  # ledger state -> batches (pending, delivered, deferred, failed)
    retries: int

    @property
    def accounted(self) -> int:
        return sum(self.rows.values())

    @property
    def reconciles(self) -> bool:
        return self.accounted == self.input_rows


@dataclass(frozen=True)
class DeliverAttempt:
    """One deliver run's outcomes (one `_outcomes/` folder), by destination."""

    folder: str
    finished_at: datetime | None  # from the folder name: deliver writes it once the batches are sent
    delivered: dict[str, int] = field(default_factory=dict)  # batches delivered now
    retries: dict[str, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.finished_at.strftime("%m-%d %H:%M:%S") if self.finished_at else self.folder


@dataclass(frozen=True)
class FeedbackLine:
    """What a destination reported of one audience after the run (`audience-relay feedback`)."""

    destination: str
    audience: str
    ids_sent: int
    reported_size: int | None   # None: the destination did not report the audience
    match_rate: float | None
    below_threshold: bool | None   # None: no threshold configured, or nothing reported
    min_match_rate: float | None


@dataclass(frozen=True)
class HeldRemovals:
    """One audience whose removals the run's guard held, and what was decided (None: nobody yet)."""

    destination: str
    audience: str
    removes: int
    committed_members: int
    limit: str
    decision: str | None


@dataclass(frozen=True)
class RunReport:
    run_id: str
    created_at: str | None
    input_rows: int
    rejected_by_reason: dict[str, int]  # run-wide: rows no destination can use
    destinations: list[DestinationLine]
    attempts: list[DeliverAttempt]
    feedback: list[FeedbackLine] = field(default_factory=list)
    input_uri: str | None = None   # the membership folder the run prepared
    consent_unknown_scopes: dict[str, int] = field(default_factory=dict)  # opt-outs for destinations not configured
    removals_held: list[HeldRemovals] = field(default_factory=list)

    @property
    def flagged(self) -> list[FeedbackLine]:
        """Audiences the destination matched less of than their threshold, or did not report."""
        return [line for line in self.feedback if line.below_threshold or line.reported_size is None]

    @property
    def status(self) -> str:
        statuses = {line.status for line in self.destinations}
        if len(statuses) == 1:
            return statuses.pop()
        for worst in ("FAILED", "BLOCKED", "QUOTA_DEFERRED", "REMOVALS_HELD"):
            if worst in statuses:
                return worst
        return "IN_PROGRESS"  # some destinations delivered, others not yet

    @property
    def reconciles(self) -> bool:
        return all(line.reconciles for line in self.destinations)


def _read_json(uri: str, required: bool) -> dict | None:
    text = storage.read_text(uri)
    if text is None:
        if required:
            raise ReportError(f"{uri}: not found; is the run prepared (and --out the root given to prepare)?")
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ReportError(f"{uri}: not valid JSON ({error.msg} at line {error.lineno})") from None


def _attempt_time(folder: str) -> datetime | None:
    try:
        return datetime.strptime(folder.split("-", 1)[0], OUTCOME_FOLDER_TIME).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def read_attempts(run_dir: str) -> list[DeliverAttempt]:
    """Every deliver attempt's outcomes, oldest first."""
    root = storage.join(run_dir, "delivery", "_outcomes")
    parts: dict[str, list[str]] = {}
    for uri in storage.list_files(root):
        relative = uri[len(root) + 1:].split("/")
        if len(relative) == 2 and relative[1].endswith(".parquet") and not relative[1].startswith((".", "_")):
            parts.setdefault(relative[0], []).append(uri)
    attempts = []
    for folder, uris in parts.items():
        delivered: dict[str, int] = {}
        retries: dict[str, int] = {}
        for uri in uris:
            try:
                table = pq.read_table(pa.BufferReader(storage.read_bytes(uri)), columns=OUTCOME_COLUMNS)
            except (pa.ArrowException, TypeError) as error:
                raise ReportError(f"{uri}: unreadable delivery outcomes ({type(error).__name__})") from None
            for outcome in table.to_pylist():
                destination = outcome["destination_id"]
                delivered[destination] = delivered.get(destination, 0) + (outcome["state"] == "delivered")
                retries[destination] = retries.get(destination, 0) + (outcome["retries"] or 0)
        attempts.append(DeliverAttempt(folder, _attempt_time(folder), delivered, retries))
    return sorted(attempts, key=lambda a: (a.finished_at or datetime.max.replace(tzinfo=timezone.utc), a.folder))


FEEDBACK_COLUMNS = ["destination_id", "audience_id", "ids_sent", "reported_size", "match_rate", "below_threshold", "min_match_rate"]


def read_feedback(run_dir: str) -> list[FeedbackLine]:
    """The run's feedback table (none before `audience-relay feedback` ran)."""
    root = storage.join(run_dir, "feedback", "table")
    lines = []
    for uri in sorted(u for u in storage.list_files(root) if u.endswith(".parquet") and not u.rsplit("/", 1)[-1].startswith((".", "_"))):
        try:
            table = pq.read_table(pa.BufferReader(storage.read_bytes(uri)), columns=FEEDBACK_COLUMNS)
        except (pa.ArrowException, TypeError) as error:
            raise ReportError(f"{uri}: unreadable feedback table ({type(error).__name__})") from None
        lines.extend(FeedbackLine(r["destination_id"], r["audience_id"], r["ids_sent"], r["reported_size"], r["match_rate"],
                                  r["below_threshold"], r["min_match_rate"]) for r in table.to_pylist())
    return sorted(lines, key=lambda line: (line.destination, line.audience))


def _destination_line(destination: str, section: dict, summary: dict | None, attempts: list[DeliverAttempt]) -> DestinationLine:
    prepared = section["accounting"]
    if summary is None:  # nothing sent yet: every row to deliver is still pending
        prepared_rows = prepared["rows"]
        rows = {"delivered": 0, "pending": prepared_rows["to_deliver"] + prepared_rows["pending"],
                **{k: prepared_rows[k] for k in ROW_KINDS[2:]}}
        status, batches = NOT_DELIVERED, {"pending": section["batches"], "delivered": 0, "deferred": 0, "failed": 0}
    else:
        rows = {k: summary["accounting"]["rows"][k] for k in ROW_KINDS}
        status, batches = summary["status"], summary["batches"]
    with_outcomes = [a for a in attempts if destination in a.retries]
    # Outcomes cover every attempt; a summary's `retries` only its own run's.
    retries = sum(a.retries[destination] for a in with_outcomes) if with_outcomes else (summary or {}).get("retries", 0)
    return DestinationLine(destination, prepared["input_rows"], rows, prepared.get("rejected_by_reason", {}), status,
                           section["batches"], batches, retries)


def load_report(out: str, run_id: str) -> RunReport:
    if not RUN_ID.fullmatch(run_id):
        raise ReportError(f"run id {run_id!r} must match {RUN_ID.pattern}")
    run_dir = storage.join(out, "runs", run_id)
    manifest_uri = storage.join(run_dir, "manifest.json")
    manifest = _read_json(manifest_uri, required=True)
    run_summary = _read_json(storage.join(run_dir, "delivery", "summary.json"), required=False) or {}
    attempts = read_attempts(run_dir)
    lines = []
    try:
        for destination, section in sorted(manifest["destinations"].items()):
            try:  # the name becomes the path of its delivery summary
                paths.segment(destination, f"{manifest_uri}: destinations")
            except paths.UnsafePath as error:
                raise ReportError(str(error)) from None
            # A destination's own summary is written by every deliver of it; the run-wide one
            # only by a deliver of all destinations at once, so it may be older.
            summary = _read_json(storage.join(run_dir, "delivery", destination, "summary.json"), required=False)
            lines.append(_destination_line(destination, section, summary or run_summary.get("destinations", {}).get(destination), attempts))
        return RunReport(run_id, manifest.get("created_at"), manifest["input_rows"], manifest["rejected"]["by_reason"], lines, attempts,
                         read_feedback(run_dir), (manifest.get("inputs") or {}).get("membership"),
                         (manifest.get("consent") or {}).get("unknown_scopes", {}), read_held_removals(out, run_id, manifest))
    except (KeyError, TypeError) as error:
        raise ReportError(f"{run_dir}: manifest or delivery summary lacks {error} (written by another version?)") from None


def read_held_removals(out: str, run_id: str, manifest: dict) -> list[HeldRemovals]:
    lines = []
    for destination in sorted(manifest["destinations"]):
        decided = removals.decisions(out, run_id, destination)
        for audience, numbers in sorted(removals.held(manifest, destination).items()):
            limits = [f"{numbers['max_remove_fraction']:.0%} of committed"] if numbers.get("max_remove_fraction") is not None else []
            limits += [f"{numbers['max_removes']} removes"] if numbers.get("max_removes") is not None else []
            lines.append(HeldRemovals(destination, audience, numbers["removes"], numbers["committed_members"], " or ".join(limits),
                                      decided.get(audience)))
    return lines


HELD_NOTE = ("removals over an audience's removal guard, held until `audience-relay approve-removals` approves "
             "or rejects them; until then the run is not committed")


def held_removals_table(report: RunReport) -> str:
    lines = [f"  {'destination':<15}{'audience':<26}{'removes':>9}{'committed':>11}  {'limit':<28}decision"]
    lines += [f"  {h.destination:<15}{h.audience:<26}{h.removes:>9}{h.committed_members:>11}  {h.limit:<28}{h.decision or 'WAITING'}"
              for h in report.removals_held]
    return "\n".join(lines)


def _label(kind: str) -> str:
    return ROW_LABELS.get(kind, kind)


def accounting_table(report: RunReport) -> str:
    header = (f"  {'destination':<15}{'input':>9}" + "".join(f"{_label(k):>11}" for k in ROW_KINDS)
              + f"  {'sum=input':<10}{'status':<16}{'batches dlv/dfr/fail/plan':>26}{'retries':>9}")
    lines = [header]
    for line in report.destinations:
        batches = f"{line.batches.get('delivered', 0)}/{line.batches.get('deferred', 0)}/{line.batches.get('failed', 0)}/{line.batches_planned}"
        check = "yes" if line.reconciles else f"NO ({line.accounted})"
        lines.append(f"  {line.destination:<15}{line.input_rows:>9}" + "".join(f"{line.rows[k]:>11}" for k in ROW_KINDS)
                     + f"  {check:<10}{line.status:<16}{batches:>26}{line.retries:>9}")
    return "\n".join(lines)


def rejected_table(report: RunReport) -> str:
    reasons = sorted({r for line in report.destinations for r in line.rejected_by_reason} | set(report.rejected_by_reason))
    lines = [f"  {'reason':<24}{'all':>9}" + "".join(f"{line.destination:>15}" for line in report.destinations)]
    for reason in reasons:
        lines.append(f"  {reason:<24}{report.rejected_by_reason.get(reason, 0):>9}"
                     + "".join(f"{line.rejected_by_reason.get(reason, 0):>15}" for line in report.destinations))
    return "\n".join(lines)


UNKNOWN_SCOPES_NOTE = "consent rows whose scope names no destination of this config (counted, not applied)"


def unknown_scopes_table(report: RunReport) -> str:
    lines = [f"  {'scope':<24}{'rows':>9}"]
    lines += [f"  {scope:<24}{rows:>9}" for scope, rows in sorted(report.consent_unknown_scopes.items())]
    return "\n".join(lines)


def _flag(line: FeedbackLine) -> str:
    if line.reported_size is None:
        return "NOT REPORTED"
    return f"LOW (< {line.min_match_rate:.0%})" if line.below_threshold else ""


def feedback_table(report: RunReport) -> str:
    lines = [f"  {'destination':<15}{'audience':<26}{'ids sent':>10}{'reported':>10}{'match':>8}  flag"]
    for line in report.feedback:
        reported = "-" if line.reported_size is None else str(line.reported_size)
        rate = "-" if line.match_rate is None else f"{line.match_rate:.0%}"
        flag = _flag(line)
        lines.append(f"  {line.destination:<15}{line.audience:<26}{line.ids_sent:>10}{reported:>10}{rate:>8}  {flag}".rstrip())
    return "\n".join(lines)


def text_report(report: RunReport) -> str:
    when = f", prepared {report.created_at}" if report.created_at else ""
    attempts = (f"{len(report.attempts)} deliver attempt(s), the last finished {report.attempts[-1].label} UTC"
                if report.attempts else "not delivered yet")
    sections = [
        f"run {report.run_id}{when}: {report.input_rows} input rows, status {report.status}, {attempts}",
        "rows per destination (delivered + pending + unchanged + consent + unmapped + rejected = input):",
        accounting_table(report),
        "rejected rows by reason (`all`: unusable for every destination):",
        rejected_table(report),
    ]
    if report.removals_held:
        sections += [f"{HELD_NOTE}:", held_removals_table(report)]
    if report.consent_unknown_scopes:
        sections += [f"{UNKNOWN_SCOPES_NOTE}:", unknown_scopes_table(report)]
    if report.feedback:
        sections += ["what the destinations report holding (ids sent: the audience's members after the run):", feedback_table(report)]
    return "\n".join(sections)


# --- HTML -----------------------------------------------------------------------------------

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
FONT = 'font-family="sans-serif" font-size="12"'


def _legend(series: dict[str, list[float]], x: float, y: float) -> list[str]:
    parts = []
    for i, name in enumerate(series):
        parts.append(f'<rect x="{x}" y="{y + 18 * i}" width="12" height="12" fill="{PALETTE[i % len(PALETTE)]}"/>'
                     f'<text x="{x + 18}" y="{y + 18 * i + 10}" {FONT}>{html.escape(name)}</text>')
    return parts


def _empty(title: str, message: str) -> str:
    return f'<figure><figcaption>{html.escape(title)}</figcaption><p class="empty">{html.escape(message)}</p></figure>'


def bar_chart(title: str, labels: list[str], series: dict[str, list[float]], unit: str, empty: str = "none") -> str:
    """Stacked horizontal bars, one row per label, as inline SVG."""
    if not labels or not any(v for values in series.values() for v in values):
        return _empty(title, empty)
    label_width, plot_width, row, legend_width = 190, 420, 24, (170 if len(series) > 1 else 0)
    totals = [sum(values[i] for values in series.values()) for i in range(len(labels))]
    scale = plot_width / max(totals)
    height = max(len(labels) * row, 18 * len(series) if len(series) > 1 else 0) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{label_width + plot_width + 80 + legend_width}" height="{height}">',
             f"<title>{html.escape(title)}</title>"]
    for i, label in enumerate(labels):
        y, x = 5 + i * row, label_width
        parts.append(f'<text x="{label_width - 8}" y="{y + 15}" text-anchor="end" {FONT}>{html.escape(label)}</text>')
        for j, (name, values) in enumerate(series.items()):
            width = values[i] * scale
            if width > 0:
                parts.append(f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{row - 6}" fill="{PALETTE[j % len(PALETTE)]}">'
                             f"<title>{html.escape(name)}: {values[i]:,} {unit}</title></rect>")
            x += width
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 15}" {FONT}>{totals[i]:,}</text>')
    if len(series) > 1:
        parts += _legend(series, label_width + plot_width + 80, 5)
    parts.append("</svg>")
    return f'<figure><figcaption>{html.escape(title)}</figcaption>{"".join(parts)}</figure>'


def column_chart(title: str, labels: list[str], series: dict[str, list[float]], unit: str, empty: str = "none") -> str:
    """Stacked vertical columns, one per label (left to right in time), as inline SVG."""
    if not labels or not any(v for values in series.values() for v in values):
        return _empty(title, empty)
    column, plot_height, top, bottom, left = 64, 200, 20, 40, 40
    totals = [sum(values[i] for values in series.values()) for i in range(len(labels))]
    scale = plot_height / max(totals)
    plot_width = column * len(labels)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{left + plot_width + 190}" height="{top + plot_height + bottom}">',
             f"<title>{html.escape(title)}</title>",
             f'<line x1="{left}" y1="{top + plot_height}" x2="{left + plot_width}" y2="{top + plot_height}" stroke="#888"/>']
    for i, label in enumerate(labels):
        x, y = left + i * column + 8, top + plot_height
        for j, (name, values) in enumerate(series.items()):
            height = values[i] * scale
            if height > 0:
                y -= height
                parts.append(f'<rect x="{x}" y="{y:.1f}" width="{column - 16}" height="{height:.1f}" fill="{PALETTE[j % len(PALETTE)]}">'
                             f"<title>{html.escape(name)}: {values[i]:,} {unit}</title></rect>")
        parts.append(f'<text x="{x + (column - 16) / 2}" y="{y - 4:.1f}" text-anchor="middle" {FONT}>{totals[i]:,}</text>')
        for k, piece in enumerate(label.split(" ", 1)):
            parts.append(f'<text x="{x + (column - 16) / 2}" y="{top + plot_height + 14 + 13 * k}" text-anchor="middle" {FONT}>{html.escape(piece)}</text>')
    parts += _legend(series, left + plot_width + 20, top)
    parts.append("</svg>")
    return f'<figure><figcaption>{html.escape(title)}</figcaption>{"".join(parts)}</figure>'


def _html_table(header: list[str], rows: list[list[object]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    def cell(i: int, value: object) -> str:
        if i >= numeric_from and isinstance(value, int):
            return f'<td class="n">{value:,}</td>'
        return f"<td>{html.escape(str(value))}</td>"

    body = "".join("<tr>" + "".join(cell(i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_report(report: RunReport) -> str:
    destinations = [line.destination for line in report.destinations]
    accounting = _html_table(
        ["destination", "input rows", *(_label(k) for k in ROW_KINDS), "sum = input", "status",
         "batches delivered", "deferred", "failed", "planned", "retries"],
        [[line.destination, line.input_rows, *(line.rows[k] for k in ROW_KINDS), "yes" if line.reconciles else f"NO ({line.accounted:,})",
          line.status, line.batches.get("delivered", 0), line.batches.get("deferred", 0), line.batches.get("failed", 0),
          line.batches_planned, line.retries] for line in report.destinations],
    )
    reasons = sorted({r for line in report.destinations for r in line.rejected_by_reason} | set(report.rejected_by_reason))
    rejected = _html_table(["reason", "all destinations", *destinations],
                           [[r, report.rejected_by_reason.get(r, 0), *(line.rejected_by_reason.get(r, 0) for line in report.destinations)] for r in reasons])
    by_count = sorted(report.rejected_by_reason, key=lambda r: (-report.rejected_by_reason[r], r))
    charts = [
        column_chart("Batches delivered per deliver attempt (by when the attempt finished, UTC)",
                     [a.label for a in report.attempts],
                     {d: [a.delivered.get(d, 0) for a in report.attempts] for d in destinations}, "batches",
                     "no batch delivered yet"),
        bar_chart("Input rows by outcome, per destination", destinations,
                  {_label(k): [line.rows[k] for line in report.destinations] for k in ROW_KINDS}, "rows"),
        bar_chart("Retries per destination (all deliver attempts)", destinations,
                  {"retries": [line.retries for line in report.destinations]}, "retries", "no retries"),
        bar_chart("Rejected rows by reason (unusable for every destination)", by_count,
                  {"rows": [report.rejected_by_reason[r] for r in by_count]}, "rows", "no rejected rows"),
    ]
    unknown_scopes = ""
    if report.consent_unknown_scopes:
        unknown_scopes = f"<h2>Consent for other destinations</h2>\n<p>{html.escape(UNKNOWN_SCOPES_NOTE[0].upper() + UNKNOWN_SCOPES_NOTE[1:])}.</p>\n" + _html_table(
            ["scope", "rows"], [[scope, rows] for scope, rows in sorted(report.consent_unknown_scopes.items())])
    held = ""
    if report.removals_held:
        held = f"<h2>Removals held for approval</h2>\n<p>{html.escape(HELD_NOTE[0].upper() + HELD_NOTE[1:])}.</p>\n" + _html_table(
            ["destination", "audience", "removes", "committed members", "limit", "decision"],
            [[h.destination, h.audience, h.removes, h.committed_members, h.limit, h.decision or "WAITING"] for h in report.removals_held],
            numeric_from=2)
    feedback = ""
    if report.feedback:
        audiences = [f"{line.destination}/{line.audience}" for line in report.feedback]
        feedback = "<h2>What the destinations report holding</h2>\n<p>Ids sent: the audience's members after the run; " \
                   "reported: the destination's own count (Meta's matched-people estimate, Google's list size).</p>\n" + _html_table(
            ["destination", "audience", "ids sent", "reported", "match rate", "flag"],
            [[line.destination, line.audience, line.ids_sent, "-" if line.reported_size is None else line.reported_size,
              "-" if line.match_rate is None else f"{line.match_rate:.0%}", _flag(line)] for line in report.feedback],
            numeric_from=2,
        ) + bar_chart("Ids sent and reported, per audience", audiences,
                      {"ids sent": [line.ids_sent for line in report.feedback],
                       "reported": [line.reported_size or 0 for line in report.feedback]}, "ids")
    verdict = ("every destination's rows sum to the input" if report.reconciles
               else "SOME DESTINATION'S ROWS DO NOT SUM TO THE INPUT")
    title = f"audience-relay run {report.run_id}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; }} th {{ background: #f3f3f3; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
figure {{ margin: 1em 0 2em; }} figcaption {{ font-weight: bold; margin-bottom: 0.4em; }} .empty {{ color: #888; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Prepared {html.escape(report.created_at or "?")}; {report.input_rows:,} input rows; status <b>{html.escape(report.status)}</b>;
{len(report.attempts)} deliver attempt(s). Accounting: {html.escape(verdict)}.</p>
<h2>Rows per destination</h2>
<p>Every input row counted once per destination: delivered, still pending, unchanged since the last snapshot,
filtered by consent, unmapped (its segment feeds none of the destination's audiences) or rejected.</p>
{accounting}
<h2>Rejected rows by reason</h2>
{rejected}
{held}
{unknown_scopes}
{feedback}
<h2>Charts</h2>
{"".join(charts)}
<p><small>Generated {datetime.now(timezone.utc).isoformat(timespec="seconds")} by <code>audience-relay report</code>
from the run's manifest, delivery summaries, outcomes and feedback table.</small></p>
</body></html>
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="the output root given to prepare and deliver (local path or s3://)")
    parser.add_argument("--run", "--run-id", "--run_id", dest="run", required=True, help="the run to report")
    parser.add_argument("--html", help="where to write the HTML report (default <out>/runs/<run>/report.html)")


def write_html_report(report: RunReport, out: str, target: str | None = None) -> str:
    """Write the run's page (default `<out>/runs/<run>/report.html`) and return where it went."""
    target = target or storage.join(out, "runs", report.run_id, "report.html")
    storage.write_text(target, html_report(report))
    return target


def run_report(args: argparse.Namespace) -> int:
    """Print the accounting, write the HTML; exit 1 if a destination's rows do not sum to the input."""
    report = load_report(args.out, args.run)
    target = write_html_report(report, args.out, args.html)
    print(text_report(report))
    print(f"html report: {target}")
    for line in report.flagged:
        why = "not reported" if line.reported_size is None else f"match rate {line.match_rate:.0%} below {line.min_match_rate:.0%}"
        print(f"audience-relay: warning: {line.destination}/{line.audience}: {why}", file=sys.stderr)
    if not report.reconciles:
        print(f"audience-relay: run {args.run}: rows of {[l.destination for l in report.destinations if not l.reconciles]} "
              "do not sum to the input", file=sys.stderr)
        return 1
    return 0
