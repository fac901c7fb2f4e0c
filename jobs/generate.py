"""`generate`: synthetic segment membership and consent files (pipeline/generator.py), for demos, tests and benchmarks.

Runs under spark-submit and `audience-relay generate`; `--previous DIR` makes the next day of a
directory it wrote.
"""
from __future__ import annotations

import argparse
import json
import sys

from audience_relay.pipeline.args import record_count
from audience_relay.pipeline.generator import GeneratorError, GeneratorSpec, generate, spec_from_previous


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=record_count, help="rows to generate (10000, 10k, 10M)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--day", type=int, help="day number; day N differs from day N-1 by churn")
    parser.add_argument("--previous", help="a directory written by generate: make its next day")
    parser.add_argument("--format", choices=["parquet", "csv", "jsonl"])
    parser.add_argument("--compression", choices=["gzip"])
    parser.add_argument("--phone-share", "--phone_share", dest="phone_share", type=float, help="share of rows with a phone id (default 0.25)")
    parser.add_argument("--master", help="Spark master (default local[*])")


def command(args: argparse.Namespace) -> int:
    """Generate one day from parsed arguments and print what was written as one JSON line."""
    from audience_relay.pipeline.session import build_session

    overrides = {"records": args.records, "seed": args.seed, "day": args.day, "data_format": args.format, "compression": args.compression,
                 "phone_share": args.phone_share}
    if args.previous:
        spec = spec_from_previous(args.previous, **overrides)
    else:
        if args.records is None:
            raise GeneratorError("--records is required unless --previous is given")
        spec = GeneratorSpec(**{k: v for k, v in overrides.items() if v is not None})
    print(json.dumps(generate(build_session("audience-relay-generate", args.master), spec, args.out)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for spark-submit."""
    from audience_relay.pipeline.entry import run_job

    return run_job("generate", __doc__, add_arguments, command, argv)


if __name__ == "__main__":
    sys.exit(main())
