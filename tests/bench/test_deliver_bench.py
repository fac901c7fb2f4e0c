"""The deliver benchmark end to end on a small run: every kind delivered once, the rate kept."""
import json

import pytest

from bench import deliver as bench

pytestmark = pytest.mark.integration


def test_deliver_benchmark_delivers_every_batch_once_within_the_rate(tmp_path, monkeypatch, capsys):
    for name in ("DATA", "WORK", "RESULTS"):
        monkeypatch.setattr(bench, name, tmp_path / name.lower())
    assert bench.main(["--ids", "25000", "--rpm", "120"]) == 0
    saved = json.loads((tmp_path / "results" / "deliver-25000.json").read_text())
    http, sftp, s3 = saved["results"]
    assert http["batches"] == 3 and http["requests"] == 3 and http["max_in_60s"] <= 120 and not http["refused"]
    assert http["job_cpu_seconds"] > 0 and http["rate_fraction"] > 0
    assert (sftp["kind"], sftp["files"]) == ("sftp", 1) and (s3["kind"], s3["files"]) == ("s3", 1)
    assert sftp["gb"] > 0 and s3["gb"] == sftp["gb"]  # the same bytes on both
    assert "meta_ads (HTTP)" in capsys.readouterr().out
