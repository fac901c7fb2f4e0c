"""`audience-relay demo`: two days of generated data through the state machines, all on this machine.

Each day runs as `audience-relay run` does: the scheduler state machine, rendered as for AWS,
executes in moto's Step Functions engine; it prepares the day once and fans out to one
delivery machine per destination (lease, deliver, summary). The destinations are local
stand-ins from the testing package (testing/emulators): the HTTP destination emulator plays the
Meta- and Google-like APIs with their batch and rate limits, and an OpenSSH server on 127.0.0.1 plays the
partner's SFTP drop when `sshd` is installed. Day 1 is a full load; its delivery commits the
snapshots, so day 2 is the delta: adds and removes per audience.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import yaml

from audience_relay.cli.run import describe, execute, run_input
from audience_relay.pipeline.config import DEFAULT_CONFIG, parse_config
from audience_relay.pipeline.errors import UsageError
from audience_relay.pipeline.generator import GeneratorSpec, generate, spec_from_previous
from audience_relay.pipeline.session import build_session
from audience_relay.report.run_report import load_report, write_html_report
from audience_relay.testing.emulators import http_destination, sftp_server

DEMO_TOKENS = {"META_ACCESS_TOKEN": "demo-meta-token", "GOOGLE_DM_TOKEN": "demo-google-token"}


class DemoError(UsageError):
    """The demo was pointed at a directory it would mix its runs into."""


def _demo_config(out: Path, sftp, emulator_urls: dict[str, str]) -> tuple[Path, object]:
    """The example config with demo credentials (environment variables) and local endpoints."""
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for destination in raw["destinations"]:
        if destination["id"] == "google_dm":
            destination["credentials"] = {"env": "GOOGLE_DM_TOKEN"}
        if destination["id"] in emulator_urls:
            destination["connection"]["base_url"] = emulator_urls[destination["id"]]
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


def run_demo(out: Path, records: int) -> int:
    if out.exists() and any(out.iterdir()):
        raise DemoError(f"--out {out} is not empty; the demo writes a fresh run layout, give it an empty directory")
    out.mkdir(parents=True, exist_ok=True)
    example = parse_config(yaml.safe_load(DEFAULT_CONFIG.read_text()), str(DEFAULT_CONFIG))
    with contextlib.ExitStack() as stack:
        sftp = None
        if shutil.which("sshd") or Path("/usr/sbin/sshd").exists():
            sftp = sftp_server.start_sftp_server(out / "sftp-server")
            stack.callback(sftp.stop)
        emulators = {}
        for destination in example.active_destinations:
            if destination.kind == "http_api":
                limits = http_destination.EmulatorConfig(
                    max_batch=destination.profile_spec.max_batch_size,
                    requests_per_minute=destination.profile_spec.requests_per_minute,
                    requests_per_day=destination.profile_spec.requests_per_day,
                )
                emulators[destination.id] = stack.enter_context(http_destination.HttpDestinationEmulator(limits))
        # The jobs run as child processes: they inherit these credentials.
        os.environ.update(DEMO_TOKENS)
        if sftp:
            os.environ["PARTNER_SFTP_KEY"] = sftp.private_key
        config_path, config = _demo_config(out, sftp, {d: e.url for d, e in emulators.items()})
        spark = build_session("audience-relay-demo")
        data = out / "data"
        day1 = generate(spark, GeneratorSpec(records=records, destinations=tuple(d.id for d in config.destinations)), data / "day1")
        day2 = generate(spark, spec_from_previous(data / "day1"), data / "day2")
        spark.stop()  # the runs start their own Spark processes
        print(f"\naudience-relay demo: {records} generated rows per day, config {config_path}")
        if sftp is None:
            print("  (sshd not found: the SFTP destination is left out; install openssh-server to include it)")
        failed = False
        pages = []
        for run_id, day in (("day1", day1), ("day2", day2)):
            print(f"\nrun {run_id} through the scheduler state machine (as `audience-relay run`):")
            report = execute(config_path, run_input(run_id, day["membership"], day["consent"]), out)
            print(describe(report, out))
            failed |= report.execution.status != "SUCCEEDED"
            pages.append(write_html_report(load_report(str(out), run_id), str(out)))
        print("\nwhat the emulated APIs saw (both days):")
        for destination_id, emulator in emulators.items():
            score = emulator.score
            print(f"  {destination_id:<14}{len(score.accepted):>4} batches accepted, {score.duplicates} duplicates, "
                  f"{sum(score.refused.values())} refused, at most {score.max_requests_in(60.0)} requests in any minute")
        if sftp:
            files = sorted((sftp.root / "incoming").rglob("*.csv.gz"))
            print(f"  {'partner_sftp':<14}{len(files):>4} files in {sftp.root / 'incoming'}")
    print(f"\nday 2 is the delta against the snapshots day 1's delivery committed. Runs: {out / 'runs'}")
    print("each day's report (rows per destination, batches, retries, charts; `audience-relay report` writes it for any run):")
    for page in pages:
        print(f"  {page}")
    return 1 if failed else 0
