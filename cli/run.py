"""`audience-relay run`: one input through the Step Functions definitions, on this machine.

The scheduler machine (or one destination's machine, with `--destination`) rendered exactly
as for AWS is executed by moto's Step Functions engine in this process; its Glue and EMR
tasks run `jobs/prepare.py` and `jobs/deliver.py` as local Spark processes, and DynamoDB,
S3, SNS and SQS are a moto server on 127.0.0.1 that lives as long as the run.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from audience_relay.cli.tables import delivered_table, prepared_table
from audience_relay.jobs import deliver as deliver_job
from audience_relay.jobs import prepare as prepare_job
from audience_relay.orchestration.machines.specs import Resources, machine_specs
from audience_relay.pipeline.config import DEFAULT_CONFIG, ConfigError, load_config
from audience_relay.pipeline.errors import UsageError
from audience_relay.pipeline.paths import RUN_ID
from audience_relay.pipeline.prepare import default_run_id

# Glue job name -> the script Glue would run (EMR steps name the same scripts by file name).
SCRIPTS = {Resources.prepare_job: Path(prepare_job.__file__), Resources.deliver_job: Path(deliver_job.__file__)}


class RunError(UsageError):
    """`run` cannot start: a missing optional dependency or a bad argument."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="membership file or directory")
    parser.add_argument("--consent", required=True, help="consent file or directory (opt-outs are never delivered)")
    parser.add_argument("--out", required=True, help="local directory standing in for the work bucket")
    parser.add_argument("--config", help="destinations YAML (default: the embedded example config)")
    parser.add_argument("--run-id", "--run_id", dest="run_id", help="run id, also the execution name (default: UTC timestamp)")
    parser.add_argument("--destination", help="run only this destination's machine (it prepares its own run)")
    parser.add_argument("--retry-scale", type=float, default=0.01,
                        help="factor on Retry back-off sleeps (default 0.01; 1 waits as AWS would). Wait states are never scaled")


def run_input(run_id: str, membership: str, consent: str) -> dict:
    """The execution input the scheduler and destination machines take (the S3 ingest builds the same)."""
    return {"run_id": run_id, "input": membership, "consent": consent}


def execute(config_path: Path, payload: dict, out: Path, destination: str | None = None, retry_scale: float = 0.01):
    """Run the machines; returns orchestration.local.runner.LocalRunReport."""
    try:
        from audience_relay.orchestration.local.runner import run_locally
    except ImportError as missing:
        raise RunError(f"running the state machines locally needs the `local` extras ({missing.name} is missing): "
                       "pip install 'audience-relay[local]'") from None
    config = load_config(config_path)
    active = [d.id for d in config.active_destinations]
    if destination and destination not in active:
        raise ConfigError(f"--destination {destination}: not among the active destinations {active}")
    return run_locally(machine_specs(config.active_destinations), config_path, payload, out, SCRIPTS, destination, retry_scale)


def describe(report, out: Path) -> str:
    """The execution tree, then the run's accounting as the jobs wrote it."""
    execution = report.execution
    lines = [f"execution {execution.name}: {execution.status}" + (f" ({execution.error})" if execution.error else "")]
    for destination_id, child in sorted(report.destinations.items()):
        lines.append(f"  destination-{destination_id:<14} {child.status:<10} {' > '.join(child.states)}"
                     + (f"\n    {child.error}: {child.cause[:400]}" if child.error else ""))
    if execution.error and not report.destinations:
        lines.append(f"  {execution.cause[:800]}")
    lines.append(f"  local jobs run: {', '.join(report.jobs) or 'none'} (logs in {out / 'local-jobs'})")
    for alert in report.alerts:
        lines.append(f"  ALERT {alert['subject']}: phase {alert['message'].get('phase')}")
    run_dir = out / "runs" / report.run_id
    manifest = run_dir / "manifest.json"
    if manifest.exists():
        lines += ["prepared:", prepared_table(json.loads(manifest.read_text())),
                  f"  batches:  {run_dir / 'batches'}/", f"  manifest: {manifest}"]
    summaries = {p.parent.name: json.loads(p.read_text()) for p in sorted((run_dir / "delivery").glob("*/summary.json"))}
    if summaries:
        lines += ["delivered:", delivered_table({"destinations": summaries})]
    return "\n".join(lines)


def command(args: argparse.Namespace) -> int:
    if args.run_id is not None and not RUN_ID.fullmatch(args.run_id):
        raise RunError(f"--run-id {args.run_id!r} must match {RUN_ID.pattern} (it becomes a path and the execution name)")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    payload = run_input(args.run_id or default_run_id(), str(Path(args.input).resolve()), str(Path(args.consent).resolve()))
    report = execute(Path(args.config or DEFAULT_CONFIG), payload, out, args.destination, args.retry_scale)
    print(describe(report, out))
    return 0 if report.execution.status == "SUCCEEDED" else 1
