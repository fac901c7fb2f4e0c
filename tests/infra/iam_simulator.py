"""AWS IAM policy evaluation by an independent simulator: @cloud-copilot/iam-simulate (Node),
which implements IAM's evaluation logic (actions, resource ARNs, every condition operator).

Our templates' rules (tests/infra/policy.py) are our own reading of IAM; what a role may really
do is asked of this simulator instead, on the policies CloudFormation created. The package is
pinned in tests/infra/iam/package-lock.json and installed on first use (`npm ci`).
"""
from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

HARNESS = Path(__file__).resolve().parent / "iam"


@dataclass(frozen=True)
class Request:
    """One API call by a principal holding `policies` (name -> policy document)."""

    policies: dict[str, dict]
    action: str
    resource: str
    account: str
    principal: str
    context: dict[str, str] = field(default_factory=dict)


def _installed() -> None:
    """`npm ci` once, under a lock: the suite's workers may ask at the same time."""
    with open(HARNESS / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (HARNESS / "node_modules" / "@cloud-copilot" / "iam-simulate").is_dir():
            npm = shutil.which("npm")
            if npm is None:
                raise RuntimeError("the IAM simulation needs Node.js and npm (./dev test installs them as root; else apt-get install nodejs npm)")
            subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=HARNESS, check=True)


def decisions(requests: list[Request]) -> list[str]:
    """'Allowed', 'ImplicitlyDenied' or 'ExplicitlyDenied' for each request."""
    _installed()
    simulations = [{"identityPolicies": [{"name": name, "policy": policy} for name, policy in r.policies.items()],
                    "principal": r.principal, "action": r.action, "resource": r.resource, "accountId": r.account,
                    "context": r.context} for r in requests]
    done = subprocess.run(["node", str(HARNESS / "simulate.mjs")], input=json.dumps(simulations), capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the IAM simulator failed (exit {done.returncode}): {done.stderr[-2000:]}")
    answers = json.loads(done.stdout)
    errors = [answer["error"] for answer in answers if "error" in answer]
    if errors:
        raise ValueError(f"the simulator refused a request: {errors}")
    return [answer["decision"] for answer in answers]
