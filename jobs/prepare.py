"""`prepare`: raw segment membership -> per-destination delivery batches (pipeline/prepare.py).

The job script spark-submit, Glue (`--NAME value` arguments) and `audience-relay prepare` run:
it reads the arguments, starts Spark and prints the run's summary as one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from audience_relay.pipeline import storage
from audience_relay.pipeline.config import load_config
from audience_relay.pipeline.inputs import InputError
from audience_relay.pipeline.prepare import PrepareRequest, default_run_id, run_prepare
from audience_relay.transforms.batching import DEFAULT_SUB_BUCKETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="membership file or directory (local path or s3://)")
    parser.add_argument("--out", required=True, help="output root; the run goes to <out>/runs/<run_id>/")
    parser.add_argument("--config", help="destinations YAML (default: the embedded example config)")
    parser.add_argument("--consent", help="consent file or directory")
    parser.add_argument("--destinations", help="comma-separated destination ids to prepare (default: every active one)")
    parser.add_argument("--if-prepared", "--if_prepared", dest="if_prepared", choices=["fail", "skip"], default="fail",
                        help="when the run's manifest exists: fail (default) or skip (orchestrated retries)")
    parser.add_argument("--run-id", "--run_id", dest="run_id", help="run id (default: UTC timestamp)")
    parser.add_argument("--format", "--input-format", dest="input_format", choices=["parquet", "csv", "jsonl"])
    parser.add_argument("--consent-format", "--consent_format", dest="consent_format", choices=["parquet", "csv", "jsonl"])
    parser.add_argument("--sub-buckets", "--sub_buckets", dest="sub_buckets", type=int, default=DEFAULT_SUB_BUCKETS)
    parser.add_argument("--master", help="Spark master when starting Spark locally (default local[*])")
    parser.add_argument("--without-completion-marker", dest="require_completion_marker", action="store_false",
                        help="read a --input folder that has no _SUCCESS marker (yet): its writer may not be done, "
                             "and in mirror mode missing files become removals; recorded in the manifest")


def request_from_args(args: argparse.Namespace) -> PrepareRequest:
    from audience_relay.pipeline.config import DEFAULT_CONFIG

    config_path = args.config or str(DEFAULT_CONFIG)
    config = load_config(config_path)
    if args.destinations:
        config = config.restricted_to([d.strip() for d in args.destinations.split(",") if d.strip()])
    return PrepareRequest(
        input=args.input,
        out=args.out,
        config=config,
        config_source=config_path,
        run_id=args.run_id or default_run_id(),
        consent=args.consent,
        input_format=args.input_format,
        consent_format=args.consent_format,
        sub_buckets=args.sub_buckets,
        if_prepared=args.if_prepared,
        require_completion_marker=args.require_completion_marker,
    )


def command(args: argparse.Namespace) -> int:
    """Run prepare from parsed arguments and print the summary line (CLI, spark-submit, Glue)."""
    from audience_relay.pipeline.session import build_session

    request = request_from_args(args)
    for option, path in (("--input", request.input), ("--consent", request.consent)):
        if path and not storage.is_s3(path) and not Path(path).exists():   # before Spark's start-up, not after
            raise InputError(f"{option} {path}: no such file or directory")
    print(json.dumps(run_prepare(build_session("audience-relay-prepare", args.master), request)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for spark-submit and Glue."""
    from audience_relay.pipeline.entry import run_job

    return run_job("prepare", __doc__, add_arguments, command, argv)


if __name__ == "__main__":
    sys.exit(main())
