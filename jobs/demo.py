"""`audience-relay demo`: two days of generated data through `prepare`, on local Spark and files.

Day 1 is a full load. Its snapshots are then committed as if day 1 had been delivered (the
demo does not send anything), so day 2 shows the delta: adds and removes per audience.
"""
from __future__ import annotations

import json
from pathlib import Path

from jobs import snapshots
from jobs.config import DEFAULT_CONFIG, load_config
from jobs.generate import GeneratorSpec, generate, spec_from_previous
from jobs.prepare import PrepareRequest, run_prepare
from jobs.session import build_session


class DemoError(ValueError):
    """The demo was pointed at a directory it would mix its runs into."""


def _table(summary: dict, manifest: dict) -> str:
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


def run_demo(out: Path, records: int) -> int:
    if out.exists() and any(out.iterdir()):
        raise DemoError(f"--out {out} is not empty; the demo writes a fresh run layout, give it an empty directory")
    spark = build_session("audience-relay-demo")
    config = load_config(DEFAULT_CONFIG)
    data = out / "data"
    day1 = generate(spark, GeneratorSpec(records=records, destinations=tuple(d.id for d in config.destinations)), data / "day1")
    day2 = generate(spark, spec_from_previous(data / "day1"), data / "day2")
    results = []
    for run_id, day in (("day1", day1), ("day2", day2)):
        request = PrepareRequest(
            input=day["membership"], consent=day["consent"], out=str(out), config=config,
            config_source=str(DEFAULT_CONFIG), run_id=run_id,
        )
        summary = run_prepare(spark, request)
        manifest = json.loads(Path(summary["manifest"]).read_text())
        results.append((summary, manifest))
        if run_id == "day1":
            for destination in config.active_destinations:
                snapshots.commit(str(out), run_id, destination.id)
    print(f"\naudience-relay demo: {records} generated rows per day, config {DEFAULT_CONFIG}")
    for summary, manifest in results:
        print(f"\nrun {summary['run_id']}: {summary['input_rows']} input rows, {summary['rejected_rows']} rejected, "
              f"{summary['batches']} batches, {summary['seconds']} s")
        print(_table(summary, manifest))
        print(f"  batches:  {summary['run_dir']}/batches/")
        print(f"  rejected: {summary['run_dir']}/rejected/")
        print(f"  manifest: {summary['manifest']}")
    print("\nday 1 snapshots were committed as if delivered; day 2 is the delta against them.")
    return 0
