"""Job arguments from the CLI, spark-submit or Glue (`--NAME value`, plus Glue's own arguments)."""
from __future__ import annotations

import argparse


def _glue_resolver():
    try:
        from awsglue.utils import getResolvedOptions
    except ImportError:
        return None
    return getResolvedOptions


def parse_job_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse `argv`, ignoring the arguments Glue adds (`--JOB_ID`, `--TempDir`, ...).

    Inside a Glue run (`--JOB_NAME` present) the values are resolved with awsglue's
    `getResolvedOptions`, as Glue documents, then typed and validated by `parser`.
    """
    resolver = _glue_resolver()
    if resolver and "--JOB_NAME" in argv:
        known = {opt.lstrip("-") for action in parser._actions for opt in action.option_strings if opt.startswith("--")}
        present = [a.lstrip("-") for a in argv if a.startswith("--") and a.lstrip("-") in known]
        resolved = resolver(argv, present)
        # getResolvedOptions returns `run-id` under the key `run_id`.
        argv = [item for name in present for item in (f"--{name}", resolved[name.replace("-", "_")])]
    args, _glue_extras = parser.parse_known_args(argv)
    return args
