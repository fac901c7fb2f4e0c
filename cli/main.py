"""The `audience-relay` command line. Exit codes: 0 ok, 2 bad input or config, 3 quota deferred or waiting, 4 superseded, 5 removals held, 1 other."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from audience_relay.cli import catalog as catalog_command
from audience_relay.cli import dead_letters
from audience_relay.cli import ingest as ingest_command
from audience_relay.cli import lease as lease_command
from audience_relay.cli import run as run_command
from audience_relay.cli.demo import run_demo
from audience_relay.control import server as control_server
from audience_relay.deploy import stacks as deploy_command
from audience_relay.jobs import deliver as deliver_job
from audience_relay.jobs import feedback as feedback_command
from audience_relay.jobs import generate as generate_job
from audience_relay.jobs import prepare as prepare_job
from audience_relay.pipeline import removals as removals_command
from audience_relay.pipeline.args import record_count
from audience_relay.pipeline.entry import EXIT_BAD_INPUT, EXIT_OK, run_guarded
from audience_relay.report import run_report


def _definitions(args: argparse.Namespace) -> int:
    from audience_relay.orchestration.definitions import render
    from audience_relay.orchestration.machines.specs import Resources, machine_specs
    from audience_relay.pipeline.config import DEFAULT_CONFIG, load_config

    if not (args.out or args.stack):
        print("audience-relay definitions: give --out DIR, --stack FILE or both", file=sys.stderr)
        return EXIT_BAD_INPUT
    config = load_config(args.config or DEFAULT_CONFIG)
    specs = machine_specs(config.active_destinations)
    if args.stack:
        Path(args.stack).parent.mkdir(parents=True, exist_ok=True)
        Path(args.stack).write_text(json.dumps(deploy_command.orchestration_stack(config, args.with_catalog), indent=1) + "\n")
        print(args.stack)
    if args.out:
        for path in render(specs, Resources(), args.out):
            print(path)
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    return run_demo(Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="audience-relay-demo-")), args.records)


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="where to write (default: a new temporary directory)")
    parser.add_argument("--records", type=record_count, default=200_000, help="rows per day (default 200k)")


def _definitions_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="directory for the .asl.json files (local resource names)")
    parser.add_argument("--stack", help="write the orchestration CloudFormation stack (JSON) here (`audience-relay deploy` renders it itself)")
    parser.add_argument("--config", help="destinations YAML (default: the embedded example config)")
    parser.add_argument("--with-catalog", "--with_catalog", action="store_true",
                        help="the stack of a stage with the run catalog (deploy --catalog-vpc): the catalog Lambda, "
                             "the window Lambda in its VPC, the scheduler's RecordInCatalog")


# name, one line of help, what adds its arguments, its handler (in the order `--help` lists them)
COMMANDS = (
    ("demo", "generate two days of data and prepare both, all local", _demo_arguments, _demo),
    ("generate", "write synthetic segment membership and consent files", generate_job.add_arguments, generate_job.command),
    ("prepare", "turn membership into per-destination delivery batches", prepare_job.add_arguments, prepare_job.command),
    ("deliver", "send a prepared run's batches; resumable, idempotent", deliver_job.add_arguments, deliver_job.command),
    ("run", "run one input through the Step Functions definitions, locally", run_command.add_arguments, run_command.command),
    ("definitions", "render the Step Functions definitions (ASL JSON) from the config", _definitions_arguments, _definitions),
    ("dead-letters", "list permanently failed batches; --replay queues them again", dead_letters.add_arguments, dead_letters.run_dead_letters),
    ("approve-removals", "approve (or --reject) the removals a run's removal guard held", removals_command.add_arguments, removals_command.run_approve_removals),
    ("lease", "show a quota lease; --release frees a stuck one", lease_command.add_arguments, lease_command.run_lease),
    ("deploy", "build, upload and deploy a stage's stacks in order (from a checkout)", deploy_command.add_arguments, deploy_command.run_deploy),
    ("control-plane", "serve the control plane API locally (SigV4-signed requests only)", control_server.add_arguments, control_server.run_server),
    ("ingest", "gather windows of landed files from the ingest queue and start one run per window", ingest_command.add_arguments, ingest_command.run_ingest),
    ("catalog", "the run catalog (PostgreSQL): migrate its schema, record a run, show one", catalog_command.add_arguments, catalog_command.run_catalog),
    ("feedback", "ask each destination what it holds of a run's audiences; write the feedback table", feedback_command.add_arguments, feedback_command.run_feedback),
    ("report", "a run's row accounting per destination; writes an HTML report with charts", run_report.add_arguments, run_report.run_report),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audience-relay", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, summary, add_arguments, handler in COMMANDS:
        command = commands.add_parser(name, help=summary)
        add_arguments(command)
        command.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
