"""`python -m bench.prepare --rows 1M`: prepare against its peers and the hashing limit, side by side.

For each size: generated day 1 (full load) and day 2 (delta against day 1's committed
snapshot), three destinations (the example config). Contenders, each a fresh process on the
same input in the same run: ours on local[2] and local[1], the DuckDB SQL peer, the Python-UDF
Spark peer; plus OpenSSL's SHA-256 speed on inputs of the identifiers' length, the hashing
step's limit on this CPU. A peer's time counts only if its adds and removes equal ours
(per destination, audience and op: the count and a checksum of the match keys).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb
import psutil

from bench.measure import Measured, parquet_files, run_measured
from audience_relay.cli.main import record_count
from audience_relay.pipeline import snapshots
from audience_relay.pipeline.config import DEFAULT_CONFIG, load_config

# List prices (us-east-1, on-demand) used by the cost model. Glue: $0.44 per DPU-hour, a DPU is
# 4 vCPU + 16 GB (G.1X). EMR: m6g.xlarge (4 vCPU, 16 GB) EC2 $0.154/h + EMR uplift $0.0385/h.
GLUE_DPU_HOUR = 0.44
GLUE_VCPU_PER_DPU = 4
EMR_INSTANCE_HOUR = 0.154 + 0.0385
EMR_VCPU_PER_INSTANCE = 4

ROOT = Path(__file__).resolve().parent
DATA = ROOT / ".data"
WORK = ROOT / ".work"
RESULTS = ROOT / "results"


def input_name(rows: int, phone_share: float | None) -> str:
    """The input's folder and results name: the row count, and the phone share when not the default."""
    return str(rows) if phone_share is None else f"{rows}-phones{round(phone_share * 100)}"


def ensure_data(rows: int, phone_share: float | None = None) -> dict[str, Path]:
    """Generated day 1 and day 2 for `rows`, made once and reused (bench/.data/)."""
    base = DATA / input_name(rows, phone_share)
    days = {"day1": base / "day1", "day2": base / "day2"}
    if not (days["day2"] / "_generator.json").exists():
        shutil.rmtree(base, ignore_errors=True)
        cli = [sys.executable, "-m", "audience_relay.cli.main", "generate", "--master", "local[2]"]
        if phone_share is not None:
            cli += ["--phone-share", str(phone_share)]
        subprocess.run([*cli, "--records", str(rows), "--out", str(days["day1"])], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([*cli, "--previous", str(days["day1"]), "--out", str(days["day2"])], check=True, stdout=subprocess.DEVNULL)
    return days


def fingerprint(batches: Path) -> list[tuple]:
    """Per destination, audience and op: how many keys and the sum of their md5 prefixes."""
    glob = str(batches / "**" / "*.parquet")
    return duckdb.sql(
        f"SELECT destination_id, audience_id, op, count(*), sum(('0x' || substr(md5(match_key), 1, 8))::BIGINT) "
        f"FROM read_parquet('{glob}', hive_partitioning = true) GROUP BY ALL ORDER BY ALL").fetchall()


def input_rows(path: Path) -> int:
    return duckdb.sql(f"SELECT count(*) FROM read_parquet('{path / 'membership' / '**' / '*.parquet'}')").fetchone()[0]


def commit_as_delivered(out: Path, run_id: str) -> None:
    """What a completed delivery does: the run becomes every destination's baseline (day 2 is compared with day 1)."""
    for destination in load_config(DEFAULT_CONFIG).active_destinations:
        snapshots.commit(str(out), run_id, destination.id, snapshots.baseline_for(str(out), destination.id, run_id).run_id)


def ours(days: dict[str, Path], out: Path, master: str) -> dict[str, tuple[Measured, Path]]:
    results = {}
    for day, path in days.items():
        measured = run_measured(
            ["-m", "audience_relay.cli.main", "prepare", "--input", str(path / "membership"), "--consent", str(path / "consent"),
             "--out", str(out), "--run-id", day, "--master", master],
            event_log=out / "events" / day)
        commit_as_delivered(out, day)
        results[day] = (measured, out / "runs" / day / "batches")
    return results


def _peer(days: dict[str, Path], out: Path, module: str, options: list[str], snapshot: str,
          event_log: bool) -> dict[str, tuple[Measured, Path]]:
    """Run a peer module on each day; each day after the first gets the day before's snapshot."""
    results, previous = {}, None
    for day, path in days.items():
        target = out / day
        argv = ["-m", module, "--input", str(path / "membership"), "--consent", str(path / "consent"),
                "--out", str(target), *options, *(["--previous", str(previous)] if previous else [])]
        results[day] = (run_measured(argv, event_log=out / "events" / day if event_log else None), target / "batches")
        previous = target / snapshot
    return results


def duckdb_peer(days: dict[str, Path], out: Path, threads: int) -> dict[str, tuple[Measured, Path]]:
    return _peer(days, out, "bench.peers.duckdb_pipeline", ["--threads", str(threads)], "snapshot.parquet", event_log=False)


def udf_peer(days: dict[str, Path], out: Path, master: str) -> dict[str, tuple[Measured, Path]]:
    return _peer(days, out, "bench.peers.udf_pipeline", ["--master", master], "snapshot", event_log=True)


def sha256_limit(sample: Path) -> dict:
    """OpenSSL SHA-256 hashes per second on one core, for inputs as long as the average identifier."""
    length = round(duckdb.sql(f"SELECT avg(length(trim(id_value))) FROM read_parquet('{sample / 'membership' / '**' / '*.parquet'}')"
                              ).fetchone()[0])
    printed = subprocess.run(["openssl", "speed", "-evp", "sha256", "-bytes", str(length), "-seconds", "3"],
                             capture_output=True, text=True, check=True).stdout
    kilobytes = float(re.search(r"^sha256\s+([\d.]+)k", printed, re.MULTILINE).group(1))
    return {"bytes": length, "hashes_per_second_per_core": round(kilobytes * 1000 / length)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prepare", description=__doc__)
    parser.add_argument("--rows", type=record_count, required=True, help="generated rows per day: 1M, 10M, 50M")
    parser.add_argument("--phone-share", type=float, help="share of rows with a phone id (generator default 0.25): a phone-heavy input")
    parser.add_argument("--skip", default="", help="comma-separated contenders to leave out: local1, duckdb, udf")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    days = ensure_data(args.rows, args.phone_share)
    name = input_name(args.rows, args.phone_share)
    rows = {day: input_rows(path) for day, path in days.items()}
    work = WORK / name
    shutil.rmtree(work, ignore_errors=True)

    contenders: dict[str, tuple[int, dict]] = {"ours local[2]": (2, ours(days, work / "ours2", "local[2]"))}
    if "local1" not in skip:
        contenders["ours local[1]"] = (1, ours(days, work / "ours1", "local[1]"))
    if "duckdb" not in skip:
        contenders["duckdb (2 threads)"] = (2, duckdb_peer(days, work / "duckdb", 2))
    if "udf" not in skip:
        contenders["python udf local[2]"] = (2, udf_peer(days, work / "udf", "local[2]"))
    limit = sha256_limit(days["day1"])

    expected = {day: fingerprint(batches) for day, (_, batches) in contenders["ours local[2]"][1].items()}
    table = []
    for contender, (cores, results) in contenders.items():
        for day, (measured, batches) in results.items():
            files, mean_mb = parquet_files(batches)
            equal = fingerprint(batches) == expected[day]
            table.append({
                "contender": contender, "day": day, "rows": rows[day], "cores": cores, "seconds": measured.seconds,
                "rows_per_s_per_core": round(rows[day] / measured.seconds / cores) if equal else None,
                "cpu_seconds": measured.cpu_seconds, "peak_rss_mb": measured.peak_rss_mb, "shuffle_mb": measured.shuffle_mb, "files": files, "mean_file_mb": mean_mb,
                "equal_to_ours": equal, "phases": measured.phases,
            })
    machine = {"cores": psutil.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30), "cpu": platform.processor() or platform.machine(),
               "date": date.today().isoformat(), "python": platform.python_version()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"prepare-{name}.json").write_text(json.dumps({"machine": machine, "rows": args.rows, "results": table, "sha256": limit}, indent=2) + "\n")
    print(render(table, limit, machine, name))
    return 0


def render(table: list[dict], limit: dict, machine: dict, name: str) -> str:
    lines = [f"prepare benchmark, input {name} (generated rows per day), {machine['cores']} cores, {machine['memory_gib']} GiB, {machine['date']}",
             "| contender | day | rows | s | rows/s/core | CPU s | peak RSS MB | shuffle MB | files | mean file MB | same adds/removes as ours |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in table:
        rate = f"{r['rows_per_s_per_core']:,}" if r["rows_per_s_per_core"] else "not counted"
        shuffle = "" if r["shuffle_mb"] is None else r["shuffle_mb"]
        lines.append(f"| {r['contender']} | {r['day']} | {r['rows']:,} | {r['seconds']} | {rate} | {r.get('cpu_seconds', '')} | {r['peak_rss_mb']} | {shuffle} | "
                     f"{r['files']} | {r['mean_file_mb']} | {'yes' if r['equal_to_ours'] else 'NO'} |")
    lines.append(f"\nSHA-256 limit (OpenSSL, one core, {limit['bytes']}-byte inputs): {limit['hashes_per_second_per_core']:,} hashes/s"
                 " (prepare hashes each valid row once per destination that takes its id type)")
    ours2 = [r for r in table if r["contender"] == "ours local[2]"]
    lines.append("\ncost model per billion input rows, from ours local[2]'s rows/s/core, assuming linear scaling across cores:")
    for r in ours2:
        core_hours = 1e9 / r["rows_per_s_per_core"] / 3600
        glue = core_hours / GLUE_VCPU_PER_DPU
        emr = core_hours / EMR_VCPU_PER_INSTANCE
        lines.append(f"  {r['day']}: {core_hours:,.1f} core-hours = Glue {glue:,.1f} DPU-hours (${glue * GLUE_DPU_HOUR:,.2f}), "
                     f"EMR {emr:,.1f} m6g.xlarge-hours (${emr * EMR_INSTANCE_HOUR:,.2f})")
    lines.append("\nours local[2], seconds per phase (rows/s/core of the day's input):")
    for r in ours2:
        parts = ", ".join(f"{k} {v} s ({round(r['rows'] / v / 2):,})" for k, v in r["phases"].items() if v > 0)
        lines.append(f"  {r['day']}: {parts}")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("AUDIENCE_RELAY_DRIVER_MEMORY", "4g")
    raise SystemExit(main())
