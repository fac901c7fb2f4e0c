"""Bad input through the real `prepare` job (in process, `audience-relay prepare ...`).

Each kind of bad input either stops the run with exit 2 and a message on stderr that names the
file, column or key (and nothing deliverable is written), or its rows go to `rejected/` with a
reason while every valid row still reaches the batches and each destination's accounting
reconciles: to_deliver + unchanged + pending + consent_filtered + unmapped + rejected = input.

Where a test wants bad rows rejected rather than the run stopped by the quality gate, it runs
with RELAXED, a config whose gate tolerates 90% of rejected or null rows (the default 20% / 1%
would stop it: that behaviour is tested on its own, with STRICT).
"""
from __future__ import annotations

import datetime
import gzip
import json
import random
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from audience_relay.cli.main import main
from audience_relay.pipeline.config import load_config
from audience_relay.testing import reference

MAX_BATCH = 40
DESTINATIONS = [
    # Takes every id type: every valid row is delivered, so "nothing valid is lost" is exact.
    {"id": "lake_drop", "kind": "s3", "profile": "s3_objects", "max_batch_size": MAX_BATCH, "sync_mode": "upsert",
     "connection": {"bucket": "partner-drop"}, "audiences": {"aud_a": ["seg_a"], "aud_b": ["seg_b"]}},
    # Emails of one segment only: the other rows count as id_type_not_accepted and unmapped.
    {"id": "meta_email", "kind": "http_api", "profile": "meta_custom_audiences", "id_types": ["email"],
     "max_batch_size": MAX_BATCH, "credentials": {"env": "META_ACCESS_TOKEN"}, "audiences": {"meta_a": ["seg_a"]}},
]
STRICT = {"version": 1, "quality": {"row_count_band": None}, "destinations": DESTINATIONS}
RELAXED = {
    "version": 1,
    "quality": {"max_null_fraction": 0.9, "max_unknown_id_type_fraction": 0.9, "max_rejected_fraction": 0.9, "row_count_band": None},
    "destinations": DESTINATIONS,
}
COLUMNS = ("user_id", "id_type", "id_value", "segment_id")
MB = 1 << 20


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("configs")
    paths = {}
    for name, raw in (("strict", STRICT), ("relaxed", RELAXED)):
        paths[name] = str(folder / f"{name}.yaml")
        Path(paths[name]).write_text(yaml.safe_dump(raw, sort_keys=False))
    return paths


def good_rows(n: int, prefix: str) -> list[dict]:
    """Valid rows of all four id types over both segments (dirty case and spaces included)."""
    rows = []
    for i in range(n):
        id_type, value = [
            ("email", f" {prefix}.{i}@Example.com"),
            ("phone", f"+1 415 555 {i:04d}"),
            ("maid", f"{i:08x}-aaaa-4bbb-8ccc-{prefix.encode().hex()[:4]:0>4}{i:08x}"),
            ("external_id", f"{prefix}-ext-{i}"),
        ][i % 4]
        rows.append({"user_id": f"{prefix}-u{i}", "id_type": id_type, "id_value": value, "segment_id": ("seg_a", "seg_b")[i % 3 == 0]})
    return rows


def csv_text(rows: list[dict], columns=COLUMNS) -> str:
    return ",".join(columns) + "\n" + "".join(",".join(row[c] for c in columns) + "\n" for row in rows)


def write_parquet(path: Path, rows: list[dict], schema: pa.Schema | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def prepare(capsys, input_path: Path, out: Path, config: str, *extra: str) -> tuple[int, str]:
    if input_path.is_dir():
        (input_path / "_SUCCESS").touch()   # the writer is done: what is in the folder is the input
    capsys.readouterr()
    code = main(["prepare", "--input", str(input_path), "--out", str(out), "--run-id", "r1", "--config", config, *extra])
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, out: Path, *names: str) -> None:
    """Exit 2, a one-line-ish message naming what is wrong, no Java trace, nothing written."""
    assert code == 2, err
    assert "Traceback" not in err and "\tat org.apache" not in err, err
    for name in names:
        assert name in err, f"{name!r} not in {err!r}"
    run = out / "runs" / "r1"
    assert not (run / "manifest.json").exists() and not (run / "batches").exists()


def delivered(out: Path) -> dict[str, set]:
    """{destination: {(audience, id_type, match_key)}} from the run's add batches, checking batch sizes."""
    table = pq.read_table(out / "runs" / "r1" / "batches", partitioning="hive").to_pylist()
    sizes = Counter((r["destination_id"], r["audience_id"], r["op"], r["batch_number"]) for r in table)
    assert all(size <= MAX_BATCH for size in sizes.values()), sizes
    members: dict[str, set] = {}
    for row in table:
        assert row["op"] == "add"
        members.setdefault(row["destination_id"], set()).add((row["audience_id"], row["id_type"], row["match_key"]))
    return members


def check_run(out: Path, config: str, valid: list[dict], input_rows: int | None, rejected: dict[str, int] | None) -> dict:
    """The run reconciles per destination, every valid row is delivered, and only those.

    `rejected`: the expected rejected rows by reason (id_type_not_accepted is never expected
    here: lake_drop takes every id type). `input_rows` and `rejected` are None when they are
    not known up front (random bytes); every row that is not valid must still be rejected or
    unmapped, and every valid one delivered.
    """
    manifest = json.loads((out / "runs" / "r1" / "manifest.json").read_text())
    input_rows = manifest["input_rows"] if input_rows is None else input_rows
    assert manifest["input_rows"] == input_rows
    for destination_id, section in manifest["destinations"].items():
        accounting = section["accounting"]
        assert accounting["reconciles"] and accounting["input_rows"] == input_rows, (destination_id, accounting)
        assert sum(accounting["rows"].values()) == input_rows, (destination_id, accounting)
    lake = manifest["destinations"]["lake_drop"]["accounting"]["rows"]
    assert lake["to_deliver"] == len(valid) and lake["rejected"] == manifest["rejected"]["rows"]
    assert lake["unmapped"] + lake["rejected"] == input_rows - len(valid)
    if rejected is not None:
        assert manifest["rejected"]["by_reason"] == rejected
    written = pq.read_table(out / "runs" / "r1" / "rejected").to_pylist()
    assert Counter(r["reject_reason"] for r in written) == Counter(manifest["rejected"]["by_reason"])
    expected, _ = reference.members(valid, [], load_config(config))
    got = delivered(out)
    for destination_id, members in expected.items():
        assert got.get(destination_id, set()) == set(members), destination_id
    return manifest


# --- truncated and unreadable files -------------------------------------------------------------


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "broken, damage, detail",
    [
        # the file Spark infers the schema from: Spark fails on the driver
        ("a.parquet", truncate, "not a Parquet file. Expected magic number at tail"),
        ("b.parquet", truncate, "not a Parquet file. Expected magic number at tail"),  # another file: fails in a task
        # Spark would skip it silently (unless it read the schema from it): its rows, if it had
        # any, would become removals in mirror mode.
        ("b.parquet", lambda path: path.write_bytes(b""), "0 bytes"),
    ],
    ids=["first-file-cut-in-half", "later-file-cut-in-half", "empty-file"],
)
def test_an_unreadable_parquet_file_among_good_ones_is_named_and_nothing_is_written(spark, tmp_path, capsys, configs, broken, damage, detail):
    folder = tmp_path / "in"
    write_parquet(folder / "a.parquet", good_rows(100, "a"))
    write_parquet(folder / "b.parquet", good_rows(100, "b"))
    damage(folder / broken)
    code, err = prepare(capsys, folder, tmp_path / "out", configs["strict"])
    assert_refused(code, err, tmp_path / "out", f"{folder / broken}: unreadable file", detail)


@pytest.mark.parametrize("size, detail", [(2000, "Unexpected end of input stream"), (0, "0 bytes")], ids=["cut", "empty"])
def test_a_truncated_gzip_csv_among_good_ones_is_named(spark, tmp_path, capsys, configs, size, detail):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.csv").write_text(csv_text(good_rows(50, "a")))
    (folder / "b.csv.gz").write_bytes(gzip.compress(csv_text(good_rows(3000, "b")).encode())[:size])
    code, err = prepare(capsys, folder, tmp_path / "out", configs["strict"])
    assert_refused(code, err, tmp_path / "out", f"{folder / 'b.csv.gz'}: unreadable file", detail)


# --- CSV headers ----------------------------------------------------------------------------------


def test_columns_in_another_order_and_unknown_extra_columns_are_read_by_name_and_an_empty_part_is_harmless(spark, tmp_path, capsys, configs):
    """Extra columns (a lake export's `country`) are ignored; the order of the columns does not
    matter; a 0-byte CSV part is a file without rows (unlike a 0-byte Parquet or gzip file)."""
    folder = tmp_path / "in"
    folder.mkdir()
    first, second = good_rows(80, "a"), good_rows(80, "b")
    order = ("segment_id", "country", "id_value", "user_id", "id_type", "ingested_by")
    for name, rows in (("part-1.csv", first), ("part-2.csv", second)):
        (folder / name).write_text(csv_text([dict(r, country="de", ingested_by="job-7") for r in rows], order))
    (folder / "part-0.csv").write_bytes(b"")
    code, err = prepare(capsys, folder, tmp_path / "out", configs["strict"])
    assert code == 0, err
    check_run(tmp_path / "out", configs["strict"], first + second, input_rows=160, rejected={})


@pytest.mark.parametrize(
    "second_header",
    [("segment_id", "id_value", "id_type", "user_id"), ("user_id", "id_type", "id_value"), ("user_id", "id_type", "id_value", "segment")],
    ids=["other-order", "missing-column", "renamed-column"],
)
def test_a_csv_file_whose_header_differs_from_the_others_is_named(spark, tmp_path, capsys, configs, second_header):
    """Spark maps CSV columns by position within one read: a folder's files must share a header.
    The header is read from one of the files (Spark picks which), so either file may be named."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "part-0.csv").write_text(csv_text(good_rows(50, "a")))
    second = [dict(r, segment=r["segment_id"]) for r in good_rows(50, "b")]
    (folder / "part-1.csv").write_text(csv_text(second, second_header))
    code, err = prepare(capsys, folder, tmp_path / "out", configs["strict"])
    assert_refused(code, err, tmp_path / "out", "every CSV file of one input needs the same header")
    assert re.search(rf"{re.escape(str(folder))}/part-[01]\.csv: header (\[|has \d columns)", err), err
    if len(second_header) == 4:
        # Names outside the data contract are counted, not shown: a header may be a row of data.
        shown = [c for c in second_header if c in COLUMNS]
        hidden = f" and {len(second_header) - len(shown)} other name(s), not shown" if len(shown) < 4 else "]"
        assert f"[{', '.join(shown)}{hidden}" in err and f"[{', '.join(COLUMNS)}]" in err


def test_a_csv_without_a_required_column_names_the_file_and_the_column(spark, tmp_path, capsys, configs):
    path = tmp_path / "renamed.csv"
    path.write_text(csv_text([dict(r, user=r["user_id"]) for r in good_rows(20, "a")], ("user", "id_type", "id_value", "segment_id")))
    code, err = prepare(capsys, path, tmp_path / "out", configs["strict"])
    assert_refused(code, err, tmp_path / "out", f"{path}: missing required column(s) ['user_id']")


# --- wrong column types ---------------------------------------------------------------------------


@pytest.mark.parametrize("int_file", ["a.parquet", "b.parquet"])
def test_a_parquet_file_with_an_integer_user_id_is_named_with_the_column(spark, tmp_path, capsys, configs, int_file):
    folder = tmp_path / "in"
    for name, prefix in (("a.parquet", "a"), ("b.parquet", "b")):
        rows = good_rows(60, prefix)
        if name == int_file:
            rows = [dict(r, user_id=1000 + i) for i, r in enumerate(rows)]
        write_parquet(folder / name, rows)
    code, err = prepare(capsys, folder, tmp_path / "out", configs["strict"])
    assert_refused(code, err, tmp_path / "out", f"{folder / int_file}: column 'user_id' is stored as INT64", "expected string")


def test_a_parquet_file_without_a_column_that_another_file_has_is_named_with_the_column(spark, tmp_path, capsys, configs):
    """Spark reads the schema from one file and a later file's missing column as nulls: each local
    file's footer is checked, so the file is named as a CSV or JSON Lines file would be."""
    folder = tmp_path / "in"
    write_parquet(folder / "a.parquet", good_rows(100, "a"))
    write_parquet(folder / "b.parquet", [{k: v for k, v in r.items() if k != "segment_id"} for r in good_rows(50, "b")])
    code, err = prepare(capsys, folder, tmp_path / "out", configs["relaxed"])
    assert_refused(code, err, tmp_path / "out", f"{folder / 'b.parquet'}: missing required column(s) ['segment_id']")


def test_parquet_updated_at_as_strings_is_parsed_and_unparseable_ones_are_malformed(spark, tmp_path, capsys, configs):
    valid = good_rows(100, "a")
    rows = [dict(r, updated_at="2026-11-23T10:00:00Z") for r in valid] + [
        dict(r, updated_at="yesterday") for r in good_rows(10, "bad")
    ]
    path = write_parquet(tmp_path / "in" / "a.parquet", rows)
    code, err = prepare(capsys, path.parent, tmp_path / "out", configs["strict"])
    assert code == 0, err
    check_run(tmp_path / "out", configs["strict"], valid, input_rows=110, rejected={"malformed_record": 10})


def test_parquet_updated_at_stored_as_text_in_one_file_and_as_timestamps_in_another_is_named(spark, tmp_path, capsys, configs):
    folder = tmp_path / "in"
    write_parquet(folder / "a.parquet", [dict(r, updated_at=datetime.datetime(2026, 11, 23)) for r in good_rows(50, "a")])
    write_parquet(folder / "b.parquet", [dict(r, updated_at="2026-11-23T10:00:00Z") for r in good_rows(50, "b")])
    code, err = prepare(capsys, folder, tmp_path / "out", configs["strict"])
    assert_refused(code, err, tmp_path / "out", f"{folder / 'b.parquet'}: column 'updated_at' is stored as BINARY")


def test_parquet_timestamps_with_and_without_a_time_zone_mix_in_one_input(spark, tmp_path, capsys, configs):
    """pandas writes naive datetimes (TIMESTAMP_NTZ), Spark and Glue UTC-adjusted ones."""
    folder = tmp_path / "in"
    first, second = good_rows(50, "a"), good_rows(50, "b")
    write_parquet(folder / "a.parquet", [dict(r, updated_at=datetime.datetime(2026, 11, 23)) for r in first])
    utc = datetime.datetime(2026, 11, 23, tzinfo=datetime.timezone.utc)
    write_parquet(folder / "b.parquet", [dict(r, updated_at=utc) for r in second])
    code, err = prepare(capsys, folder, tmp_path / "out", configs["strict"])
    assert code == 0, err
    check_run(tmp_path / "out", configs["strict"], first + second, input_rows=100, rejected={})


def test_json_numbers_are_read_as_their_digits_and_objects_arrays_or_non_utf8_lines_are_malformed(spark, tmp_path, capsys, configs):
    valid = good_rows(100, "a")
    lines = [json.dumps(r).encode() for r in valid]
    numeric = [{"user_id": 9001, "id_type": "phone", "id_value": 14155550199, "segment_id": "seg_a"},
               {"user_id": "n2", "id_type": "external_id", "id_value": 123456789012345678901234567890, "segment_id": "seg_b"}]
    lines += [json.dumps(r).encode() for r in numeric]
    valid += [{k: str(v) for k, v in r.items()} for r in numeric]
    containers = [{"user_id": "o1", "id_type": "external_id", "id_value": {"id": "x1"}, "segment_id": "seg_a"},
                  {"user_id": "o2", "id_type": "external_id", "id_value": ["x2", "x3"], "segment_id": "seg_a"},
                  {"user_id": {"id": 3}, "id_type": "email", "id_value": "o3@example.com", "segment_id": "seg_a"},
                  {"user_id": "o4", "id_type": "email", "id_value": "o4@example.com", "segment_id": ["seg_a"]}]
    lines += [json.dumps(r).encode() for r in containers]
    # Jackson refuses bytes that are not UTF-8: the line is malformed, not mangled.
    lines.insert(50, '{"user_id": "l1", "id_type": "external_id", "id_value": "ext\u00e9", "segment_id": "seg_a"}'.encode("latin-1"))
    path = tmp_path / "in" / "a.jsonl"
    path.parent.mkdir()
    path.write_bytes(b"\n".join(lines) + b"\n")
    code, err = prepare(capsys, path.parent, tmp_path / "out", configs["strict"])
    assert code == 0, err
    check_run(tmp_path / "out", configs["strict"], valid, input_rows=107, rejected={"malformed_record": 5})


# --- encodings ------------------------------------------------------------------------------------


def test_non_utf8_bytes_are_rejected_not_mangled_into_deliverable_ids(spark, tmp_path, capsys, configs):
    """Spark's CSV reader turns bytes that are not UTF-8 into U+FFFD: 'ext\\xe9' and 'ext\\xe8'
    would both become 'ext\\ufffd' and be delivered as one id. Such rows are `invalid_encoding`;
    random bytes become malformed or otherwise rejected rows. Relaxed gate: the garbage lines
    are many."""
    folder = tmp_path / "in"
    folder.mkdir()
    before, after, other = good_rows(60, "a"), good_rows(60, "b"), good_rows(60, "c")
    latin1 = [
        "l1,email,caf\u00e9@example.com,seg_a",
        "l2,external_id,ext\u00e9,seg_a",
        "l3,external_id,ext\u00e8,seg_a",
        "l\u00e94,email,fine@example.com,seg_a",
        "l5,email,fine5@example.com,seg_\u00e9",
    ]
    garbage = random.Random(6).randbytes(3000)
    (folder / "a.csv").write_bytes(
        csv_text(before).encode()
        + "".join(line + "\n" for line in latin1).encode("latin-1")
        + garbage + b"\n"
        + csv_text(after).encode().split(b"\n", 1)[1]
    )
    (folder / "b.csv").write_text(csv_text(other))
    code, err = prepare(capsys, folder, tmp_path / "out", configs["relaxed"])
    assert code == 0, err
    manifest = check_run(tmp_path / "out", configs["relaxed"], before + after + other, input_rows=None, rejected=None)
    assert manifest["rejected"]["by_reason"]["invalid_encoding"] >= len(latin1)
    rejected = pq.read_table(tmp_path / "out" / "runs" / "r1" / "rejected").to_pylist()
    assert {r["user_id"] for r in rejected if r["reject_reason"] == "invalid_encoding"} >= {"l1", "l2", "l3", "l\ufffd4", "l5"}


# --- huge values ------------------------------------------------------------------------------------


def test_one_megabyte_values_are_rejected_with_a_reason_and_never_batched(spark, tmp_path, capsys, configs):
    """Before the fix, the dotted 1 MB email overflowed the JVM's stack in the email regex and
    killed the executor (in local mode the whole job). A 1 MB segment id maps to no audience."""
    valid = good_rows(200, "a")
    huge = [
        ({"user_id": "h1", "id_type": "email", "id_value": "a" * MB + "@example.com", "segment_id": "seg_a"}, "invalid_email"),
        ({"user_id": "h2", "id_type": "email", "id_value": "a." * (MB // 2) + "a@example.com", "segment_id": "seg_a"}, "invalid_email"),
        ({"user_id": "h3", "id_type": "email", "id_value": "a@" + "b." * (MB // 2) + "com", "segment_id": "seg_a"}, "invalid_email"),
        ({"user_id": "h4", "id_type": "external_id", "id_value": "x" * MB, "segment_id": "seg_a"}, "invalid_external_id"),
        ({"user_id": "h5", "id_type": "phone", "id_value": "1" * MB, "segment_id": "seg_a"}, "invalid_phone"),
        ({"user_id": "h6", "id_type": "maid", "id_value": "f" * MB, "segment_id": "seg_a"}, "invalid_maid"),
        ({"user_id": "u" * MB, "id_type": "email", "id_value": "h7@example.com", "segment_id": "seg_a"}, "invalid_user_id"),
        ({"user_id": " " * MB + "h8", "id_type": "email", "id_value": "h8@example.com", "segment_id": "seg_a"}, None),
        ({"user_id": "h9", "id_type": "email", "id_value": "h9@example.com", "segment_id": "s" * MB}, "unmapped"),
    ]
    valid.append(huge[7][0])  # whitespace around an id is trimmed: a valid row
    path = tmp_path / "in" / "a.csv"
    path.parent.mkdir()
    path.write_text(csv_text(valid[:100] + [row for row, _ in huge if row not in valid] + valid[100:]))
    code, err = prepare(capsys, path.parent, tmp_path / "out", configs["strict"])
    assert code == 0, err
    reasons = Counter(reason for _, reason in huge if reason not in (None, "unmapped"))
    manifest = check_run(tmp_path / "out", configs["strict"], valid, input_rows=len(valid) + 8, rejected=dict(sorted(reasons.items())))
    assert manifest["destinations"]["lake_drop"]["accounting"]["rows"]["unmapped"] == 1
    batches = pq.read_table(tmp_path / "out" / "runs" / "r1" / "batches").to_pylist()
    assert max(len(r["match_key"]) for r in batches) <= 64


# --- nulls ----------------------------------------------------------------------------------------------


def null_rows() -> list[dict]:
    every = [dict.fromkeys(COLUMNS) for _ in range(150)]
    some = [
        {"user_id": None, "id_type": "email", "id_value": "n1@example.com", "segment_id": "seg_a"},
        {"user_id": "n2", "id_type": "email", "id_value": "n2@example.com", "segment_id": None},
        {"user_id": "n3", "id_type": None, "id_value": "n3@example.com", "segment_id": "seg_a"},
        {"user_id": "n4", "id_type": "email", "id_value": None, "segment_id": "seg_a"},
    ]
    return every + some


NULL_REASONS = {"missing_user_id": 151, "missing_segment_id": 1, "missing_id_type": 1, "missing_id_value": 1}


@pytest.mark.parametrize("data_format", ["csv", "parquet"])
def test_null_rows_stop_the_run_at_the_quality_gate_by_default(spark, tmp_path, capsys, configs, data_format):
    rows = good_rows(150, "a") + null_rows()
    path = tmp_path / f"in.{data_format}"
    if data_format == "csv":
        path.write_text(csv_text([{k: v or "" for k, v in r.items()} for r in rows]))
    else:
        write_parquet(path, rows, pa.schema([(c, pa.string()) for c in COLUMNS]))
    code, err = prepare(capsys, path, tmp_path / "out", configs["strict"])
    assert_refused(code, err, tmp_path / "out", f"{path}: input failed", "expect_column_values_to_not_be_null on user_id")


def test_null_rows_are_rejected_with_reasons_and_good_rows_delivered_when_the_gate_allows(spark, tmp_path, capsys, configs):
    """CSV only: Parquet nulls reach the same columns (the gate test above reads both)."""
    valid = good_rows(150, "a")
    rows = valid[:75] + null_rows() + valid[75:]
    path = tmp_path / "in.csv"
    path.write_text(csv_text([{k: v or "" for k, v in r.items()} for r in rows]))
    code, err = prepare(capsys, path, tmp_path / "out", configs["relaxed"])
    assert code == 0, err
    check_run(tmp_path / "out", configs["relaxed"], valid, input_rows=len(rows), rejected=NULL_REASONS)


# --- empty inputs (a header-only file is in tests/integration/test_cli.py) --------------------------------


@pytest.mark.parametrize(
    "files, extra, message",
    [
        ({"part-0.csv": b""}, [], "no CSV header line: the input is empty"),
        ({"part-0.jsonl": b""}, [], "input failed 1 critical data-quality check"),
        ({"part-0.parquet": b""}, [], "part-0.parquet: unreadable file (0 bytes"),
        ({}, [], "no data files in this directory"),
        ({"_SUCCESS": b""}, [], "no data files in this directory"),
        ({}, ["--format", "csv"], "no data files in this directory"),
        ({"_SUCCESS": b""}, ["--format", "parquet"], "no data files in this directory"),
    ],
    ids=["empty-csv", "empty-jsonl", "empty-parquet", "no-files", "only-success-marker", "no-files-csv", "only-marker-parquet"],
)
def test_an_empty_input_folder_is_refused_naming_it(spark, tmp_path, capsys, configs, files, extra, message):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    code, err = prepare(capsys, folder, tmp_path / "out", configs["strict"], *extra)
    assert_refused(code, err, tmp_path / "out", str(folder), message)


# --- config -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda raw: raw["destinations"][0].update(max_batch_sise=10), "destinations[0] (lake_drop).max_batch_sise: unknown key"),
        (lambda raw: raw.update(qualty={}), "qualty: unknown key"),
        (lambda raw: raw["destinations"][1].update(max_batch_size=20_000),
         "destinations[1] (meta_email).max_batch_size: 20000 is above the meta_custom_audiences maximum of 10000"),
    ],
    ids=["unknown-destination-key", "unknown-top-level-key", "batch-size-above-profile-maximum"],
)
def test_a_bad_config_is_refused_naming_the_key_path(spark, tmp_path, capsys, change, message):
    raw = json.loads(json.dumps(STRICT))
    change(raw)
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(raw))
    (tmp_path / "in.csv").write_text(csv_text(good_rows(10, "a")))
    code, err = prepare(capsys, tmp_path / "in.csv", tmp_path / "out", str(config))
    assert_refused(code, err, tmp_path / "out", f"{config}: {message}")
