"""`audience-relay report` on a run folder built by hand: manifest, summaries and outcome Parquet as the jobs write them."""
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audience_relay.cli.main import main
from audience_relay.pipeline.deliver import OUTCOME

RAW_EMAIL = "alice.example@gmail.com"  # planted in an outcome's error: it must never reach the report
ARROW_TYPES = {"StringType()": pa.string(), "LongType()": pa.int64(), "IntegerType()": pa.int32(), "DoubleType()": pa.float64()}
OUTCOME_SCHEMA = pa.schema([(f.name, ARROW_TYPES[repr(f.dataType)]) for f in OUTCOME.fields])  # deliver's own schema


def _accounting(input_rows, to_deliver, unchanged, pending, consent, unmapped, rejected_by_reason):
    return {
        "input_rows": input_rows,
        "rows": {"to_deliver": to_deliver, "unchanged": unchanged, "pending": pending, "consent_filtered": consent,
                 "unmapped": unmapped, "rejected": sum(rejected_by_reason.values())},
        "rejected_by_reason": rejected_by_reason,
        "members": {"add": to_deliver - 5, "unchanged": unchanged},
        "reconciles": True,
    }


def _manifest():
    return {
        "run_id": "day2",
        "created_at": "2026-11-24T03:00:00+00:00",
        "input_rows": 1000,
        "rejected": {"rows": 30, "by_reason": {"id_type_not_accepted": 10, "invalid_email": 15, "zero_maid": 5}, "path": "rejected/"},
        "destinations": {
            "google_dm": {"kind": "http_api", "batches": 4, "baseline_run_id": "day1",
                          "accounting": _accounting(1000, 400, 200, 0, 10, 290, {"id_type_not_accepted": 80, "invalid_email": 15, "zero_maid": 5})},
            "meta_ads": {"kind": "http_api", "batches": 2, "baseline_run_id": "day1",
                         "accounting": _accounting(1000, 300, 100, 20, 5, 545, {"id_type_not_accepted": 10, "invalid_email": 15, "zero_maid": 5})},
        },
        "batches": [],
    }


def _google_summary():
    """google_dm after a quota deferral: 2 of its 4 batches (250 of its 400 rows) delivered."""
    return {
        "status": "QUOTA_DEFERRED", "resume_at": "2026-11-25T08:00:00Z",
        "batches": {"pending": 0, "delivered": 2, "deferred": 2, "failed": 0},
        "ids": {"pending": 0, "delivered": 240, "deferred": 150, "failed": 0},
        "sent_now": 1, "fenced": 0, "retries": 1, "snapshot_committed": False, "superseded_by": None,
        "accounting": {"input_rows": 1000, "rows": {"delivered": 250, "pending": 150, "unchanged": 200, "consent_filtered": 10,
                                                    "unmapped": 290, "rejected": 100}, "reconciles": True},
        "destination": "google_dm", "run_id": "day2", "seconds": 12.0,
    }


def _outcomes(folder, rows):
    folder.mkdir(parents=True)
    keys = OUTCOME_SCHEMA.names
    table = pa.Table.from_pylist([dict(zip(keys, row)) for row in rows], schema=OUTCOME_SCHEMA)
    pq.write_table(table, folder / "part-00000-x-c000.snappy.parquet")
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-00000-x-c000.snappy.parquet.crc").write_bytes(b"not parquet")  # Spark's checksum files are skipped


def _row(number, state, retries=0, error=None):
    return (f"day2|google_dm|g|add|{number}|c", "google_dm", "g", "add", 120, state, retries + 1, retries, 0.5 * retries, error, None)


@pytest.fixture
def run_folder(tmp_path):
    run_dir = tmp_path / "out" / "runs" / "day2"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps(_manifest()))
    (run_dir / "delivery" / "google_dm").mkdir(parents=True)
    (run_dir / "delivery" / "google_dm" / "summary.json").write_text(json.dumps(_google_summary()))
    outcomes = run_dir / "delivery" / "_outcomes"
    _outcomes(outcomes / "20261124T031500123456Z-google_dm", [
        _row(0, "delivered", retries=2), _row(1, "deferred", error=f"daily quota exhausted; member {RAW_EMAIL}"),
        _row(2, "deferred"), _row(3, "deferred"),
    ])
    _outcomes(outcomes / "20261124T091500000000Z-google_dm", [_row(1, "delivered", retries=1), _row(2, "deferred"), _row(3, "deferred")])
    return tmp_path / "out"


def _table_rows(printed: str) -> dict[str, list[str]]:
    """destination -> the cells of its accounting line."""
    section = printed.split("rows per destination", 1)[1].split("rejected rows by reason", 1)[0]
    return {cells[0]: cells for cells in (line.split() for line in section.splitlines()[2:]) if cells}


def test_the_table_counts_every_input_row_once_per_destination(run_folder, capsys):
    assert main(["report", "--out", str(run_folder), "--run", "day2"]) == 0
    printed = capsys.readouterr().out
    rows = _table_rows(printed)
    # destination, input, delivered, pending, unchanged, consent, unmapped, rejected, sum=input, status, batches, retries
    assert rows["google_dm"] == ["google_dm", "1000", "250", "150", "200", "10", "290", "100", "yes", "QUOTA_DEFERRED", "2/2/0/4", "3"]
    # never delivered: everything to deliver (and held) is pending
    assert rows["meta_ads"] == ["meta_ads", "1000", "0", "320", "100", "5", "545", "30", "yes", "NOT_DELIVERED", "0/0/0/2", "0"]
    for cells in rows.values():
        assert sum(int(c) for c in cells[2:8]) == int(cells[1])
    assert "status QUOTA_DEFERRED, 2 deliver attempt(s), the last finished 11-24 09:15:00 UTC" in printed
    reasons = {line.split()[0]: line.split()[1:] for line in printed.split("rejected rows by reason", 1)[1].splitlines()[2:] if line.strip()}
    assert reasons["id_type_not_accepted"] == ["10", "80", "10"] and reasons["invalid_email"] == ["15", "15", "15"]
    assert RAW_EMAIL not in printed


def test_the_html_report_holds_the_table_and_inline_charts_and_no_identifier(run_folder, capsys):
    assert main(["report", "--out", str(run_folder), "--run", "day2"]) == 0
    page = (run_folder / "runs" / "day2" / "report.html").read_text()
    assert f"html report: {run_folder}/runs/day2/report.html" in capsys.readouterr().out
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 4
    assert not re.search(r"""(src|href)=["']?https?:""", page)  # self-contained: nothing fetched
    for title in ("Batches delivered per deliver attempt", "Input rows by outcome", "Retries per destination", "Rejected rows by reason"):
        assert title in page
    assert ">03:15:00</text>" in page and ">09:15:00</text>" in page  # one column per deliver attempt, labelled by its time
    assert "<title>google_dm: 1 batches</title>" in page
    assert "<td>QUOTA_DEFERRED</td>" in page and '<td class="n">1,000</td>' in page
    assert RAW_EMAIL not in page and "@" not in page


def test_consent_for_destinations_not_configured_is_shown_by_scope(run_folder, capsys):
    manifest_path = run_folder / "runs" / "day2" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert main(["report", "--out", str(run_folder), "--run", "day2"]) == 0
    assert "counted, not applied" not in capsys.readouterr().out  # nothing to say: no section
    manifest["consent"] = {"unknown_scopes": {"retired_dsp": 7, "tiktok": 1200}}
    manifest_path.write_text(json.dumps(manifest))
    assert main(["report", "--out", str(run_folder), "--run", "day2"]) == 0
    printed = capsys.readouterr().out
    section = printed.split("counted, not applied):", 1)[1].splitlines()
    assert [line.split() for line in section[2:4]] == [["retired_dsp", "7"], ["tiktok", "1200"]]
    page = (run_folder / "runs" / "day2" / "report.html").read_text()
    assert "<h2>Consent for other destinations</h2>" in page and '<td>tiktok</td><td class="n">1,200</td>' in page


def test_html_goes_where_asked(run_folder, tmp_path, capsys):
    target = tmp_path / "elsewhere" / "day2.html"
    assert main(["report", "--out", str(run_folder), "--run", "day2", "--html", str(target)]) == 0
    assert "<svg" in target.read_text() and not (run_folder / "runs" / "day2" / "report.html").exists()


def test_a_destination_whose_rows_do_not_sum_to_the_input_is_shown_and_fails(run_folder, capsys):
    summary = _google_summary()
    summary["accounting"]["rows"]["delivered"] = 240  # 10 rows lost
    (run_folder / "runs" / "day2" / "delivery" / "google_dm" / "summary.json").write_text(json.dumps(summary))
    assert main(["report", "--out", str(run_folder), "--run", "day2"]) == 1
    captured = capsys.readouterr()
    assert _table_rows(captured.out)["google_dm"][8:10] == ["NO", "(990)"]
    assert "['google_dm'] do not sum to the input" in captured.err


def test_the_run_wide_summary_stands_in_for_a_missing_destination_summary(run_folder, capsys):
    run_dir = run_folder / "runs" / "day2" / "delivery"
    (run_dir / "google_dm" / "summary.json").unlink()
    (run_dir / "summary.json").write_text(json.dumps({"status": "QUOTA_DEFERRED", "destinations": {"google_dm": _google_summary()}}))
    assert main(["report", "--out", str(run_folder), "--run", "day2"]) == 0
    assert _table_rows(capsys.readouterr().out)["google_dm"][2] == "250"


def test_a_prepared_run_without_deliveries_has_everything_pending(run_folder, capsys):
    import shutil

    shutil.rmtree(run_folder / "runs" / "day2" / "delivery")
    assert main(["report", "--out", str(run_folder), "--run", "day2"]) == 0
    printed = capsys.readouterr().out
    assert _table_rows(printed)["google_dm"][2:4] == ["0", "400"] and "status NOT_DELIVERED, not delivered yet" in printed
    assert "no batch delivered yet" in (run_folder / "runs" / "day2" / "report.html").read_text()


@pytest.mark.parametrize("run", ["../day2", "day 2", "a" * 41])
def test_a_run_id_that_is_not_a_run_id_exits_2(run_folder, run, capsys):
    assert main(["report", "--out", str(run_folder), "--run", run]) == 2
    assert "must match ^[A-Za-z0-9]" in capsys.readouterr().err


def test_a_missing_run_exits_2_naming_the_manifest_path(run_folder, capsys):
    assert main(["report", "--out", str(run_folder), "--run", "day9"]) == 2
    assert f"{run_folder}/runs/day9/manifest.json: not found" in capsys.readouterr().err


def test_an_unreadable_manifest_or_outcome_file_exits_2_naming_it(run_folder, capsys):
    manifest = run_folder / "runs" / "day2" / "manifest.json"
    manifest.write_text("{not json")
    assert main(["report", "--out", str(run_folder), "--run", "day2"]) == 2
    assert f"{manifest}: not valid JSON" in capsys.readouterr().err
    manifest.write_text(json.dumps(_manifest()))
    broken = run_folder / "runs" / "day2" / "delivery" / "_outcomes" / "20261124T091500000000Z-google_dm" / "part-00001.parquet"
    broken.write_bytes(b"PAR1 truncated")
    assert main(["report", "--out", str(run_folder), "--run", "day2"]) == 2
    assert f"{broken}: unreadable delivery outcomes" in capsys.readouterr().err


def test_the_report_reads_a_run_in_s3(run_folder, moto_server, tmp_path, capsys):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="report-work")
    for path in run_folder.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), "report-work", f"root/{path.relative_to(run_folder)}")
    assert main(["report", "--out", "s3://report-work/root", "--run", "day2"]) == 0
    assert _table_rows(capsys.readouterr().out)["google_dm"][-1] == "3"  # retries from both outcome folders
    page = s3.get_object(Bucket="report-work", Key="root/runs/day2/report.html")["Body"].read().decode()
    assert page.count("<svg") == 4
