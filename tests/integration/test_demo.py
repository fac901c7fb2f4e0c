"""The README's first command: `audience-relay demo` runs end to end from an installed wheel.

The wheel is built from this checkout and installed in a fresh venv outside it, so every module
the demo runs (the CLI, the job scripts Spark starts, the emulators of the testing package) comes
from the wheel. The venv borrows the test environment's third-party packages through a path entry
(installing PySpark again would cost minutes); that entry adds a folder, not its `.pth` files, so
the checkout's editable install does not come with it.
"""
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _venv_with_the_wheel(tmp_path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(ROOT)],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("audience_relay-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site / "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet", "--no-deps",
                    str(wheel)], check=True, capture_output=True)
    return venv


def test_the_demo_runs_from_a_wheel_installed_outside_the_checkout(tmp_path):
    venv = _venv_with_the_wheel(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The demo needs no AWS; nothing may point Python at the checkout or the test venv (the job starts Spark's
    # workers with its own interpreter); the suite's Spark settings for job processes stay.
    unset = ("PYTHONPATH", "PYTHONHOME", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in unset}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    probe = ("import audience_relay.cli as c, audience_relay.jobs as j, audience_relay.testing.emulators as e; "
             "print(c.__file__, j.__file__, e.__file__); import tests")
    found = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert found.stdout.split() and all(path.startswith(str(venv)) for path in found.stdout.split()), found.stdout + found.stderr
    assert "No module named 'tests'" in found.stderr   # the checkout is not on the path

    result = subprocess.run([str(venv / "bin" / "audience-relay"), "demo", "--records", "4k", "--out", str(tmp_path / "demo")],
                            cwd=elsewhere, capture_output=True, text=True, timeout=900, env=env)
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
