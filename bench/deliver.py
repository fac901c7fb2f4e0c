"""`python -m bench.deliver --ids 10M`: deliver one prepared run to local destinations and measure it.

The run holds `--ids` hashed emails in one audience for each of three destinations: the Meta
profile on the HTTP emulator (with the configured per-minute rate limit enforced by the
emulator too), an SFTP drop on a local OpenSSH server and an S3 bucket on a local moto server.
It is built once through the prepare library (batching, file layout, manifest) and reused.
Each destination is then delivered by the real `deliver` job, a fresh process per destination:
- HTTP: achieved requests/s as a fraction of the allowed rate (between the first and the last
  request), the most requests in any 60 s window, CPU seconds per request of the deliver job
  and of the emulator;
- SFTP and S3: bytes written and send time per GB.
Every destination must end with every batch accepted exactly once, or the run counts for nothing.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Callable

import psutil
import yaml

from bench.measure import Measured, run_measured
from audience_relay.cli.main import record_count
from audience_relay.testing.emulators.http_destination import EmulatorConfig, HttpDestinationEmulator
from audience_relay.testing.emulators.moto_server import start_moto_server
from audience_relay.testing.emulators.sftp_server import SftpServer, start_sftp_server

ROOT = Path(__file__).resolve().parent
DATA, WORK, RESULTS = ROOT / ".data", ROOT / ".work", ROOT / "results"
RUN_ID = "bench"
AUDIENCE, SEGMENT = "bench_all", "seg_0001"
BUCKET = "partner-drop"
FILE_BATCH = 500_000  # ids per SFTP file and S3 object


def bench_config(rpm: int, sftp: SftpServer) -> dict:
    """Three destinations over the same audience; connections point at the local servers."""
    common = {"id_types": ["email"], "sync_mode": "upsert", "audiences": {AUDIENCE: [SEGMENT]}}
    sftp_connection = {"host": "127.0.0.1", "port": sftp.port, "username": sftp.username, "remote_dir": str(sftp.root / "incoming"),
                       "known_hosts": str(sftp.known_hosts)}
    return {"version": 1, "destinations": [
        {"id": "meta_ads", "kind": "http_api", "profile": "meta_custom_audiences", "max_batch_size": 10_000,
         "rate_limit": {"requests_per_minute": rpm}, "credentials": {"env": "META_ACCESS_TOKEN"},
         "connection": {"base_url": "http://127.0.0.1:1", "account_id": "act_1"}, **common},
        {"id": "partner_sftp", "kind": "sftp", "profile": "sftp_gzip_csv", "max_batch_size": FILE_BATCH,
         "credentials": {"env": "PARTNER_SFTP_KEY"}, "connection": sftp_connection, **common},
        {"id": "partner_s3", "kind": "s3", "profile": "s3_objects", "max_batch_size": FILE_BATCH,
         "connection": {"bucket": BUCKET, "prefix": "incoming"}, **common},
    ]}


def ensure_run(ids: int, config_path: Path) -> Path:
    """The prepared run (`<out>/runs/bench/`), built once per size under bench/.data/."""
    out = DATA / f"deliver-{ids}"
    if (out / "runs" / RUN_ID / "manifest.json").exists() and (out / "runs" / RUN_ID / "snapshot" / "_SUCCESS").exists():
        return out   # built by this version (older ones lack the candidate snapshot a commit copies)
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "bench.synthetic_run", "--config", str(config_path), "--out", str(out), "--run-id", RUN_ID,
                    "--segment", SEGMENT, "--ids", str(ids)], check=True, stdout=subprocess.DEVNULL)
    return out


def deliver(out: Path, config: Path, destination: str, state: Path, workers: int, env: dict[str, str], endpoint: str | None = None) -> tuple[Measured, dict]:
    argv = ["-m", "audience_relay.cli.main", "deliver", "--out", str(out), "--run-id", RUN_ID, "--config", str(config), "--state", str(state),
            "--destination", destination, "--workers", str(workers), "--master", f"local[{workers}]",
            *(["--endpoint", f"{destination}={endpoint}"] if endpoint else [])]
    measured = run_measured(argv, env=env)
    summary = json.loads(measured.stdout.strip().splitlines()[-1])
    report = summary["destinations"][destination]
    if summary["status"] != "SUCCEEDED" or report["batches"]["delivered"] != sum(report["batches"].values()):
        raise RuntimeError(f"{destination}: delivery did not succeed: {json.dumps(summary)[:2000]}")
    return measured, report


def _http(out: Path, config: Path, work: Path, workers: int, rpm: int, env: dict[str, str], batches: int, ids: int) -> dict:
    with HttpDestinationEmulator(EmulatorConfig(requests_per_minute=rpm, keep_members=False)) as emulator:
        cpu_before = time.process_time()
        measured, report = deliver(out, config, "meta_ads", work / "http.db", workers, env, emulator.url)
        bench_cpu = time.process_time() - cpu_before  # the emulator, plus this process's sampler threads
    score = emulator.score
    times = sorted(score.request_times)
    if len(score.accepted) != batches or score.duplicates or sum(score.member_count.values()) != ids:
        raise RuntimeError(f"meta_ads: emulator accepted {len(score.accepted)} batches of {batches} "
                           f"({score.duplicates} duplicates, {sum(score.member_count.values())} ids of {ids})")
    span = times[-1] - times[0]
    achieved = (len(times) - 1) / span if span else 0.0
    return {
        "kind": "http_api", "destination": "meta_ads", "ids": ids, "batches": batches, "requests": len(times),
        "refused": dict(score.refused), "retries": report["retries"], "seconds": measured.seconds,
        "send_seconds": measured.phases.get("send"), "allowed_rps": round(rpm / 60, 3), "achieved_rps": round(achieved, 3),
        "rate_fraction": round(achieved / (rpm / 60), 4), "max_in_60s": score.max_requests_in(60.0), "rpm": rpm,
        "job_cpu_seconds": measured.cpu_seconds, "job_cpu_per_request": round(measured.cpu_seconds / len(times), 4),
        "bench_process_cpu_per_request": round(bench_cpu / len(times), 4), "peak_rss_mb": measured.peak_rss_mb,
    }


def _files(kind: str, destination: str, out: Path, config: Path, work: Path, workers: int, env: dict[str, str], batches: int,
           ids: int, written: Callable[[], tuple[int, int]]) -> dict:
    measured, report = deliver(out, config, destination, work / f"{destination}.db", workers, env)
    count, size = written()
    if count != batches:
        raise RuntimeError(f"{destination}: {count} files written for {batches} batches")
    send = measured.phases.get("send") or measured.seconds
    return {
        "kind": kind, "destination": destination, "ids": ids, "batches": batches, "files": count, "gb": round(size / 1e9, 3),
        "retries": report["retries"], "seconds": measured.seconds, "send_seconds": send,
        "send_seconds_per_gb": round(send / (size / 1e9), 1), "mb_per_s": round(size / 1e6 / send, 1),
        "job_cpu_seconds": measured.cpu_seconds, "peak_rss_mb": measured.peak_rss_mb,
    }


def _tree_size(root: Path) -> tuple[int, int]:
    files = list(root.rglob("*.csv.gz"))
    return len(files), sum(p.stat().st_size for p in files)


def _bucket_size(s3) -> tuple[int, int]:
    count = size = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            count, size = count + 1, size + item["Size"]
    return count, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.deliver", description=__doc__)
    parser.add_argument("--ids", type=record_count, default=10_000_000, help="ids per destination (default 10M)")
    parser.add_argument("--rpm", type=int, default=600, help="the HTTP destination's requests per minute (default 600, Meta's)")
    parser.add_argument("--workers", type=int, default=2, help="deliver workers per destination (default 2)")
    parser.add_argument("--skip", default="", help="comma-separated kinds to leave out: http, sftp, s3")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    work = WORK / f"deliver-{args.ids}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    moto = start_moto_server()
    sftp = None
    try:
        sftp = start_sftp_server(work / "sshd")
        env = {**moto.env, "PARTNER_SFTP_KEY": sftp.private_key, "META_ACCESS_TOKEN": "bench-token"}
        config = work / "destinations.yaml"
        config.write_text(yaml.safe_dump(bench_config(args.rpm, sftp)))
        out = ensure_run(args.ids, config)
        manifest = json.loads((out / "runs" / RUN_ID / "manifest.json").read_text())
        batches = {d: sum(1 for b in manifest["batches"] if b["destination_id"] == d) for d in manifest["destinations"]}
        s3 = moto.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        results = []
        if "http" not in skip:
            results.append(_http(out, config, work, args.workers, args.rpm, env, batches["meta_ads"], args.ids))
        if "sftp" not in skip:
            results.append(_files("sftp", "partner_sftp", out, config, work, args.workers, env, batches["partner_sftp"], args.ids,
                                  lambda: _tree_size(sftp.root)))
        if "s3" not in skip:
            results.append(_files("s3", "partner_s3", out, config, work, args.workers, env, batches["partner_s3"], args.ids, lambda: _bucket_size(s3)))
    finally:
        if sftp:
            sftp.stop()
        moto.stop()
    machine = {"cores": psutil.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30), "date": date.today().isoformat(),
               "python": platform.python_version()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"deliver-{args.ids}.json").write_text(json.dumps({"machine": machine, "ids": args.ids, "workers": args.workers,
                                                                  "results": results}, indent=2) + "\n")
    print(render(results, machine, args.ids, args.workers))
    return 0


def render(results: list[dict], machine: dict, ids: int, workers: int) -> str:
    lines = [f"deliver benchmark, {ids:,} ids per destination, {workers} workers, {machine['cores']} cores, {machine['date']}"]
    for r in (r for r in results if r["kind"] == "http_api"):
        lines += [
            "| destination | requests | allowed req/s | achieved req/s | fraction | most in 60 s (limit) | refused | "
            "job CPU s/request | bench process CPU s/request (emulator) | s |",
            "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
            f"| {r['destination']} (HTTP) | {r['requests']:,} | {r['allowed_rps']} | {r['achieved_rps']} | {r['rate_fraction']:.1%} | "
            f"{r['max_in_60s']} ({r['rpm']}) | {r['refused'] or 'none'} | {r['job_cpu_per_request']} | {r['bench_process_cpu_per_request']} | {r['seconds']} |",
        ]
    files = [r for r in results if r["kind"] != "http_api"]
    if files:
        lines += ["", "| destination | files | GB (gzip) | send s | send s per GB | MB/s | job CPU s | s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['destination']} ({r['kind']}) | {r['files']} | {r['gb']} | {r['send_seconds']} | {r['send_seconds_per_gb']} | "
                  f"{r['mb_per_s']} | {r['job_cpu_seconds']} | {r['seconds']} |" for r in files]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
