"""A command's main, shared by the job scripts and the CLI: arguments (Glue's too), then the command,
its failures mapped to the documented exit codes: 0 ok, 2 bad input or config (one line on stderr
naming the file, key or check), 3 quota deferred or waiting, 1 anything else (the trace, redacted:
a Spark task failure quotes the row it failed on)."""
from __future__ import annotations

import argparse
import sys
import traceback
from typing import Callable

from audience_relay.connectors.destinations.shape import UnsupportedDestination
from audience_relay.connectors.secrets import SecretUnavailable
from audience_relay.pipeline.args import parse_job_args
from audience_relay.pipeline.config import ConfigError
from audience_relay.pipeline.errors import UsageError
from audience_relay.pipeline.feedback_collect import FeedbackError
from audience_relay.pipeline.inputs import InputError
from audience_relay.pipeline.logs import redact_text
from audience_relay.pipeline.paths import UnsafePath
from audience_relay.pipeline.quality import QualityError
from audience_relay.pipeline.removals import RemovalsError

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_QUOTA_DEFERRED = 0, 1, 2, 3
BAD_INPUT = (UsageError, ConfigError, InputError, QualityError, UnsupportedDestination, SecretUnavailable, UnsafePath, RemovalsError,
             FeedbackError)


def run_guarded(work: Callable[[], int]) -> int:
    """Run a command, mapping failures to the documented exit codes with a message on stderr."""
    try:
        return work()
    except BAD_INPUT as error:
        print(f"audience-relay: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception:  # noqa: BLE001 - the last line of defence prints the trace and fails
        print(redact_text(traceback.format_exc()), file=sys.stderr, end="")
        return EXIT_FAILURE


def run_job(prog: str, description: str, add_arguments: Callable, command: Callable[[argparse.Namespace], int], argv: list[str] | None) -> int:
    """A job script's main: Glue-style or CLI-style arguments, then the same command the CLI runs."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser)
    args = parse_job_args(parser, sys.argv if argv is None else [prog, *argv])
    return run_guarded(lambda: command(args))
