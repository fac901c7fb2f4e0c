"""The README's first command: `audience-relay demo` runs end to end in a fresh process."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_prepares_and_delivers_two_days(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # the demo needs no AWS
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--records", "4k", "--out", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=900, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert out.count(": SUCCEEDED") == 2
    assert "0 duplicates" in out and "not committed" not in out
    assert out.count("manifest: ") == 2 and "runs/day2/batches/" in out
    for destination in ("meta_ads", "google_dm"):
        assert f"  {destination:<14}" in out
    pages = out.rsplit("each day's report", 1)[1].split()[-2:]   # the last lines: one page per day
    assert pages == [str(tmp_path / "demo" / "runs" / day / "report.html") for day in ("day1", "day2")]
    for page in pages:
        assert open(page).read().startswith("<!DOCTYPE html>")
