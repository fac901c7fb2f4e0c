"""The reliability suite: faults, crashes, lock takeovers and bad input, run against real local servers.

`./dev test tests/reliability` runs it alone. CI runs the `ci` profile (every fault and crash
point, fewer batches); `RELIABILITY_PROFILE=full` runs thousands of batches per scenario.
"""
import os
from dataclasses import dataclass

import pytest

pytestmark = pytest.mark.reliability


@dataclass(frozen=True)
class Profile:
    name: str
    fault_batches: int     # batches delivered through the faulty HTTP destination
    crash_batches: int     # batches of the run each crash scenario kills and resumes
    random_crashes: int    # attempts killed at random moments, on top of the named crash points (0: skipped)


# `ci` keeps the whole suite within 20 minutes on a 2-core machine: every fault kind, every named
# crash point and every lock scenario, on fewer batches; `full` is the thousands-of-batches run.
PROFILES = {
    "ci": Profile("ci", fault_batches=160, crash_batches=60, random_crashes=0),
    "full": Profile("full", fault_batches=3_000, crash_batches=300, random_crashes=10),
}


@pytest.fixture(scope="session")
def profile() -> Profile:
    name = os.environ.get("RELIABILITY_PROFILE", "ci")
    if name not in PROFILES:
        raise pytest.UsageError(f"RELIABILITY_PROFILE={name!r}: expected one of {sorted(PROFILES)}")
    return PROFILES[name]
