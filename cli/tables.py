"""Plain-text tables of a run's accounting, for the terminal (demo and run print them)."""
from __future__ import annotations


def prepared_table(manifest: dict) -> str:
    lines = [f"  {'destination':<14}{'add':>9}{'remove':>9}{'unchanged':>11}{'batches':>9}  rows: deliver/unchanged/consent/unmapped/rejected = input"]
    for destination_id, report in manifest["destinations"].items():
        members, rows = report["accounting"]["members"], report["accounting"]["rows"]
        parts = "/".join(str(rows[k]) for k in ("to_deliver", "unchanged", "consent_filtered", "unmapped", "rejected"))
        pending = f" (+{rows['pending']} pending)" if rows["pending"] else ""
        lines.append(
            f"  {destination_id:<14}{members.get('add', 0):>9}{members.get('remove', 0):>9}{members.get('unchanged', 0):>11}"
            f"{report['batches']:>9}  {parts}{pending} = {report['accounting']['input_rows']}"
        )
    return "\n".join(lines)


def delivered_table(summary: dict) -> str:
    lines = [f"  {'destination':<14}{'delivered':>10}{'ids':>10}{'deferred':>9}{'failed':>7}{'retries':>8}  snapshot       "
             "rows: delivered/pending/unchanged/consent/unmapped/rejected = input"]
    for destination_id, report in summary["destinations"].items():
        batches, ids, accounting = report["batches"], report["ids"], report["accounting"]
        rows = "/".join(str(accounting["rows"][k]) for k in ("delivered", "pending", "unchanged", "consent_filtered", "unmapped", "rejected"))
        lines.append(
            f"  {destination_id:<14}{batches['delivered']:>10}{ids['delivered']:>10}{batches['deferred']:>9}{batches['failed']:>7}"
            f"{report['retries']:>8}  {'committed' if report['snapshot_committed'] else 'not committed':<15}{rows} = {accounting['input_rows']}"
            + ("" if accounting["reconciles"] else "  DOES NOT RECONCILE")
        )
    return "\n".join(lines)
