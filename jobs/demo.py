"""`audience-relay demo`: two days of generated data, prepared and delivered, all on this machine.

The destinations are local stand-ins: the HTTP destination emulator (tests/emulators) plays
the Meta- and Google-like APIs with their batch and rate limits, and an OpenSSH server on
127.0.0.1 plays the partner's SFTP drop when `sshd` is installed. Day 1 is a full load; its
delivery commits the snapshots, so day 2 is the delta: adds and removes per audience.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

import yaml

from jobs.config import DEFAULT_CONFIG, parse_config
from jobs.deliver import DeliverRequest, run_deliver
from jobs.generate import GeneratorSpec, generate, spec_from_previous
from jobs.prepare import PrepareRequest, run_prepare
from jobs.session import build_session

SOURCE_ROOT = Path(__file__).resolve().parents[1]
DEMO_TOKENS = {"META_ACCESS_TOKEN": "demo-meta-token", "GOOGLE_DM_TOKEN": "demo-google-token"}


class DemoError(ValueError):
    """The demo was pointed at a directory it would mix its runs into, or lacks its stand-ins."""


def _emulators():
    """The destination emulators live with the tests; the demo runs from the source tree."""
    if not (SOURCE_ROOT / "tests" / "emulators").is_dir():
        raise DemoError(f"the demo needs the source tree's tests/emulators (not found under {SOURCE_ROOT})")
    if str(SOURCE_ROOT) not in sys.path:
        sys.path.insert(0, str(SOURCE_ROOT))
    from tests.emulators import http_destination, sftp_server

    return http_destination, sftp_server


def _demo_config(out: Path, sftp) -> tuple[Path, object]:
    """The example config with demo credentials (environment variables) and local endpoints."""
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for destination in raw["destinations"]:
        if destination["id"] == "google_dm":
            destination["credentials"] = {"env": "GOOGLE_DM_TOKEN"}
        if destination["kind"] == "sftp":
            if sftp is None:
                destination["active"] = False
                continue
            destination["credentials"] = {"env": "PARTNER_SFTP_KEY"}
            destination["connection"] = {
                "host": "127.0.0.1", "port": sftp.port, "username": sftp.username,
                "remote_dir": str(sftp.root / "incoming"), "known_hosts": str(sftp.known_hosts),
            }
    path = out / "destinations.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, parse_config(raw, str(path))


def _prepared_table(manifest: dict) -> str:
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


def _delivered_table(summary: dict) -> str:
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


def run_demo(out: Path, records: int) -> int:
    if out.exists() and any(out.iterdir()):
        raise DemoError(f"--out {out} is not empty; the demo writes a fresh run layout, give it an empty directory")
    out.mkdir(parents=True, exist_ok=True)
    http_destination, sftp_server = _emulators()
    with contextlib.ExitStack() as stack:
        sftp = None
        if shutil.which("sshd") or Path("/usr/sbin/sshd").exists():
            sftp = sftp_server.start_sftp_server(out / "sftp-server")
            stack.callback(sftp.stop)
        os.environ.update(DEMO_TOKENS)
        if sftp:
            os.environ["PARTNER_SFTP_KEY"] = sftp.private_key
        config_path, config = _demo_config(out, sftp)
        # Spark's Python workers inherit the environment now: the tokens above must be set first.
        spark = build_session("audience-relay-demo")
        endpoints, emulators = {}, {}
        for destination in config.active_destinations:
            if destination.kind == "http_api":
                limits = http_destination.EmulatorConfig(
                    max_batch=destination.profile_spec.max_batch_size,
                    requests_per_minute=destination.profile_spec.requests_per_minute,
                    requests_per_day=destination.profile_spec.requests_per_day,
                )
                emulator = stack.enter_context(http_destination.HttpDestinationEmulator(limits))
                endpoints[destination.id], emulators[destination.id] = emulator.url, emulator
        data = out / "data"
        day1 = generate(spark, GeneratorSpec(records=records, destinations=tuple(d.id for d in config.destinations)), data / "day1")
        day2 = generate(spark, spec_from_previous(data / "day1"), data / "day2")
        print(f"\naudience-relay demo: {records} generated rows per day, config {config_path}")
        if sftp is None:
            print("  (sshd not found: the SFTP destination is left out; install openssh-server to include it)")
        status = "SUCCEEDED"
        for run_id, day in (("day1", day1), ("day2", day2)):
            prepared = run_prepare(spark, PrepareRequest(
                input=day["membership"], consent=day["consent"], out=str(out), config=config,
                config_source=str(config_path), run_id=run_id,
            ))
            manifest = json.loads(Path(prepared["manifest"]).read_text())
            delivered = run_deliver(spark, DeliverRequest(
                out=str(out), run_id=run_id, config=config, state=str(out / "state" / "delivery.db"), endpoints=endpoints,
            ))
            status = delivered["status"] if delivered["status"] != "SUCCEEDED" else status
            print(f"\nrun {run_id}: {prepared['input_rows']} input rows, {prepared['rejected_rows']} rejected, "
                  f"{prepared['batches']} batches, prepared in {prepared['seconds']} s, delivered in {delivered['seconds']} s: {delivered['status']}")
            print(_prepared_table(manifest))
            print(_delivered_table(delivered))
            print(f"  batches:  {prepared['run_dir']}/batches/")
            print(f"  manifest: {prepared['manifest']}")
        print("\nwhat the emulated APIs saw (both days):")
        for destination_id, emulator in emulators.items():
            score = emulator.score
            print(f"  {destination_id:<14}{len(score.accepted):>4} batches accepted, {score.duplicates} duplicates, "
                  f"{sum(score.refused.values())} refused, at most {score.max_requests_in(60.0)} requests in any minute")
        if sftp:
            files = sorted((sftp.root / "incoming").rglob("*.csv.gz"))
            print(f"  {'partner_sftp':<14}{len(files):>4} files in {sftp.root / 'incoming'}")
    print(f"\nday 2 is the delta against the snapshots day 1's delivery committed. Delivery state: {out / 'state' / 'delivery.db'}")
    return {"SUCCEEDED": 0, "QUOTA_DEFERRED": 3}.get(status, 1)
