"""The deliver benchmark end to end on a small run: HTTP and file delivery, each batch once, the rate kept.

SFTP is left out here (`--skip sftp`): it takes the same file path as S3 and costs another
deliver process; tests/integration/test_sftp_delivery.py covers it."""
import json

import pytest

from bench import deliver as bench

pytestmark = pytest.mark.integration


def test_deliver_benchmark_delivers_every_batch_once_within_the_rate(tmp_path, monkeypatch, capsys):
    for name in ("DATA", "WORK", "RESULTS"):
        monkeypatch.setattr(bench, name, tmp_path / name.lower())
    assert bench.main(["--ids", "25000", "--rpm", "120", "--skip", "sftp"]) == 0
    saved = json.loads((tmp_path / "results" / "deliver-25000.json").read_text())
    http, s3 = saved["results"]
    assert http["batches"] == 3 and http["requests"] == 3 and http["max_in_60s"] <= 120 and not http["refused"]
    assert http["job_cpu_seconds"] > 0 and http["rate_fraction"] > 0
    assert (s3["kind"], s3["files"]) == ("s3", 1) and s3["gb"] > 0
    assert "meta_ads (HTTP)" in capsys.readouterr().out
