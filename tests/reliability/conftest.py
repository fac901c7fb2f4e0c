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
    random_crashes: int    # crashes at random moments, on top of the named crash points


PROFILES = {
    "ci": Profile("ci", fault_batches=1_200, crash_batches=120, random_crashes=2),
    "full": Profile("full", fault_batches=5_000, crash_batches=600, random_crashes=10),
}


@pytest.fixture(scope="session")
def profile() -> Profile:
    name = os.environ.get("RELIABILITY_PROFILE", "ci")
    if name not in PROFILES:
        raise pytest.UsageError(f"RELIABILITY_PROFILE={name!r}: expected one of {sorted(PROFILES)}")
    return PROFILES[name]
