"""The CLI's exit codes and messages, in process, on small generated files."""
import json
from pathlib import Path

import pytest

from audience_relay.cli.main import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def day1(spark, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    assert main(["generate", "--records", "3k", "--out", str(out / "day1"), "--format", "csv", "--seed", "5"]) == 0
    return out


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_generate_then_prepare_succeeds_and_prints_a_json_summary(day1, capsys):
    capsys.readouterr()
    code = main(["prepare", "--input", str(day1 / "day1" / "membership"), "--consent", str(day1 / "day1" / "consent"),
                 "--out", str(day1 / "out"), "--run-id", "r1"])
    summary = last_json(capsys.readouterr().out)
    assert code == 0 and summary["status"] == "PREPARED" and summary["batches"] > 0
    assert Path(summary["manifest"]).exists()


def test_bad_config_exits_2_naming_the_key(day1, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(Path("examples/destinations.yaml").read_text().replace("sync_mode: mirror", "sync_mode: mirrror", 1))
    code = main(["prepare", "--input", str(day1 / "day1" / "membership"), "--out", str(tmp_path), "--config", str(config)])
    assert code == 2
    assert "destinations[0] (meta_ads).sync_mode" in capsys.readouterr().err


def test_empty_input_fails_the_quality_gate_and_writes_nothing(day1, tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("user_id,id_type,id_value,segment_id,updated_at\n")
    code = main(["prepare", "--input", str(empty), "--out", str(tmp_path / "out"), "--run-id", "e1"])
    err = capsys.readouterr().err
    assert code == 2 and "critical data-quality" in err and "nothing was written" in err
    assert not (tmp_path / "out" / "runs" / "e1" / "batches").exists()
    assert not (tmp_path / "out" / "runs" / "e1" / "manifest.json").exists()


def test_missing_input_exits_2_naming_the_path(tmp_path, capsys):
    code = main(["prepare", "--input", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert code == 2 and "nope: no such file or directory" in capsys.readouterr().err


def test_run_id_that_would_escape_the_run_folder_is_refused(day1, tmp_path, capsys):
    code = main(["prepare", "--input", str(day1 / "day1" / "membership"), "--out", str(tmp_path), "--run-id", "../x"])
    assert code == 2 and "run id '../x'" in capsys.readouterr().err


def test_demo_refuses_a_directory_with_earlier_runs(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "is not empty" in capsys.readouterr().err


def test_row_count_far_below_the_previous_run_stops_the_run(day1, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prepare", "--input", str(day1 / "day1" / "membership"), "--out", str(out), "--run-id", "full"]) == 0
    small = tmp_path / "small.csv"
    small.write_text("user_id,id_type,id_value,segment_id\n" + "".join(f"u{i},email,u{i}@example.com,seg_0001\n" for i in range(50)))
    capsys.readouterr()
    assert main(["prepare", "--input", str(small), "--out", str(out), "--run-id", "small"]) == 2
    err = capsys.readouterr().err
    assert "expect_table_row_count_to_be_between" in err and "observed 50" in err
