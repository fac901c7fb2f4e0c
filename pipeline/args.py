"""Job arguments from the CLI, spark-submit or Glue (`--NAME value`, plus Glue's own arguments)."""
from __future__ import annotations

import argparse


def _glue_resolver():
    try:
        from awsglue.utils import getResolvedOptions
    except ImportError:
        return None
    return getResolvedOptions


def _own_values_attached(arguments: list[str], own: set[str]) -> list[str]:
    """`--name value` of the job's own options as `--name=value`, Glue's arguments as they are.

    Glue passes every argument as a `--name value` pair; argparse, Glue's parser too, would take
    a value that starts with `-` (`--fence_token -3`, a path `-x.yaml`) for an option.
    """
    attached, position = [], 0
    while position < len(arguments):
        item = arguments[position]
        if item.startswith("--") and item[2:] in own and position + 1 < len(arguments):
            attached.append(f"{item}={arguments[position + 1]}")
            position += 2
        else:
            attached.append(item)
            position += 1
    return attached


def parse_job_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse a script's `argv` (its path first, as `sys.argv`), ignoring the arguments Glue adds
    (`--JOB_ID`, `--TempDir`, ...).

    Inside a Glue run (`--JOB_NAME` present) the job's own options are resolved with awsglue's
    `getResolvedOptions` on the whole list, as Glue documents (`getResolvedOptions(sys.argv, [...])`),
    then typed and validated by `parser`.
    """
    arguments = argv[1:]
    resolver = _glue_resolver()
    if resolver and "--JOB_NAME" in arguments:
        own = {opt[2:] for action in parser._actions for opt in action.option_strings if opt.startswith("--")}
        present = list(dict.fromkeys(a[2:].split("=", 1)[0] for a in arguments if a.startswith("--") and a[2:].split("=", 1)[0] in own))
        resolved = resolver([argv[0], *_own_values_attached(arguments, own)], present)
        # getResolvedOptions keys `run-id` as `run_id`.
        arguments = [f"--{name}={resolved[name.replace('-', '_')]}" for name in present]
    args, _glue_extras = parser.parse_known_args(arguments)
    return args


def record_count(text: str) -> int:
    """Accept 10000, 10_000, 10k, 10M."""
    multipliers = {"k": 1_000, "m": 1_000_000, "b": 1_000_000_000}
    text = text.strip().lower().replace("_", "")
    try:
        if text and text[-1] in multipliers:
            return int(float(text[:-1]) * multipliers[text[-1]])
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a record count: {text!r}") from None
