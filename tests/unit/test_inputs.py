import gzip
import json

import pytest

from audience_relay.pipeline.inputs import InputError, detect_format, naming_unreadable_files, read_consent, read_membership, unreadable_file_error

HEADER = "user_id,id_type,id_value,segment_id,updated_at\n"


def write(path, text, compress=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_gzip_csv_is_read_with_source_file_and_parsed_timestamps(spark, tmp_path):
    write(tmp_path / "in" / "day1.csv.gz", HEADER + "u1,email,a@x.com,seg_1,2026-01-01T10:00:00Z\n", compress=True)
    row = read_membership(spark, str(tmp_path / "in")).first()
    assert (row.user_id, row.id_value, row.read_error) == ("u1", "a@x.com", None)
    assert str(row.updated_at) == "2026-01-01 10:00:00"
    assert row.source_file.endswith("day1.csv.gz")


def test_csv_without_updated_at_is_accepted(spark, tmp_path):
    path = write(tmp_path / "a.csv", "user_id,id_type,id_value,segment_id\nu1,email,a@x.com,seg_1\n")
    row = read_membership(spark, str(path)).first()
    assert row.updated_at is None and row.read_error is None


def test_csv_missing_a_required_column_names_the_file_and_column(spark, tmp_path):
    path = write(tmp_path / "bad.csv", "user,id_type,id_value,segment_id\nu1,email,a@x.com,seg_1\n")
    with pytest.raises(InputError, match=r"bad\.csv.*missing required column.*user_id"):
        read_membership(spark, str(path))


def test_malformed_csv_record_is_kept_with_a_read_error(spark, tmp_path):
    path = write(tmp_path / "a.csv", HEADER + 'u1,email,a@x.com,seg_1,2026-01-01T10:00:00Z\nu2,"email,broken\n')
    rows = read_membership(spark, str(path)).collect()
    assert len(rows) == 2
    assert rows[0].read_error is None and rows[1].read_error is not None


def test_unparseable_timestamp_is_a_read_error_not_a_silent_null(spark, tmp_path):
    path = write(tmp_path / "a.csv", HEADER + "u1,email,a@x.com,seg_1,yesterday\n")
    assert read_membership(spark, str(path)).first().read_error == "unparseable updated_at"


def test_json_lines_with_a_broken_line_keeps_the_line(spark, tmp_path):
    lines = json.dumps({"user_id": "u1", "id_type": "maid", "id_value": "X", "segment_id": "s"}) + "\n{not json\n"
    path = write(tmp_path / "m.jsonl", lines)
    rows = read_membership(spark, str(path)).collect()
    assert [r.read_error is None for r in rows] == [True, False]


def test_parquet_with_a_nested_column_is_refused(spark, tmp_path):
    frame = spark.createDataFrame([("u1", "email", ("a",), "s")], "user_id string, id_type string, id_value struct<v:string>, segment_id string")
    frame.write.parquet(str(tmp_path / "p"))
    with pytest.raises(InputError, match="id_value"):
        read_membership(spark, str(tmp_path / "p"))


def test_unknown_extension_asks_for_format(tmp_path):
    write(tmp_path / "d" / "data.txt", "x")
    with pytest.raises(InputError, match="--format"):
        detect_format(str(tmp_path / "d"))


def test_consent_record_without_user_stops_the_run(spark, tmp_path):
    path = write(tmp_path / "consent.csv", "user_id,scope\nu1,*\n,meta\n")
    with pytest.raises(InputError, match="consent.csv"):
        read_consent(spark, str(path), {"meta"})


def test_consent_record_without_scope_stops_the_run(spark, tmp_path):
    path = write(tmp_path / "consent.csv", "user_id,scope\nu1,*\nu2,\n")
    with pytest.raises(InputError, match=r"consent\.csv \(no scope\)"):
        read_consent(spark, str(path), {"meta_ads"})


def test_consent_scope_that_is_no_destination_id_stops_the_run_without_quoting_it(spark, tmp_path):
    path = write(tmp_path / "consent.csv", "user_id,scope\nu1,*\nu2,Jane.Doe@Example.com\n")   # columns mixed up
    with pytest.raises(InputError, match=r"consent\.csv \(a scope that is not '\*' or a destination id\)") as refused:
        read_consent(spark, str(path), {"meta_ads"})
    assert "jane" not in str(refused.value).lower()


def test_consent_naming_thousands_of_unknown_scopes_is_refused_as_a_wrong_column(spark, tmp_path):
    path = write(tmp_path / "consent.csv", "user_id,scope\n" + "".join(f"meta_ads,u{i}\n" for i in range(150)))   # swapped columns
    with pytest.raises(InputError, match=r"consent\.csv: consent rows name more than 100 scopes"):
        read_consent(spark, str(path), {"meta_ads"})


def test_consent_scope_that_names_no_configured_destination_is_counted_not_fatal(spark, tmp_path):
    path = write(tmp_path / "consent.csv", "user_id,scope\nu1,*\nu2,google_dm\nu3, Google_DM \nu4,retired\nu5,meta_ads\n")
    consent = read_consent(spark, str(path), {"meta_ads"})
    assert consent.unknown_scopes == {"google_dm": 2, "retired": 1}
    assert sorted(consent.rows.collect()) == [("u1", "*"), ("u2", "google_dm"), ("u3", "google_dm"), ("u4", "retired"), ("u5", "meta_ads")]


def test_consent_scopes_are_case_folded_and_parquet_is_checked_too(spark, tmp_path):
    spark.createDataFrame([(" u1 ", "META_ADS"), ("u2", "*")], "user_id string, scope string").write.parquet(str(tmp_path / "c"))
    assert sorted(read_consent(spark, str(tmp_path / "c"), {"meta_ads"}).rows.collect()) == [("u1", "meta_ads"), ("u2", "*")]
    spark.createDataFrame([(None, "*")], "user_id string, scope string").write.parquet(str(tmp_path / "bad"))
    with pytest.raises(InputError, match="no user_id"):
        read_consent(spark, str(tmp_path / "bad"), {"meta_ads"})


def test_json_lines_file_with_a_renamed_key_is_named(spark, tmp_path):
    good = json.dumps({"user_id": "u1", "id_type": "email", "id_value": "a@x.com", "segment_id": "s"})
    bad = json.dumps({"user_id": "u2", "id_type": "email", "id_value": "b@x.com", "segment": "s"})
    write(tmp_path / "in" / "a.jsonl", good + "\n")
    write(tmp_path / "in" / "b.jsonl.gz", bad + "\n", compress=True)
    with pytest.raises(InputError, match=r"in/b\.jsonl\.gz: missing required column.*segment_id"):
        read_membership(spark, str(tmp_path / "in"))


def test_s3_input_is_staged_for_local_spark(spark, moto_server):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="lake")
    s3.put_object(Bucket="lake", Key="in/day1/part-1.csv", Body=(HEADER + "u1,email,a@x.com,seg_1,\n").encode())
    s3.put_object(Bucket="lake", Key="in/day1-old/part-1.csv", Body=(HEADER + "u9,email,z@x.com,seg_1,\n").encode())
    s3.put_object(Bucket="lake", Key="in/day1/", Body=b"")  # a console "folder" marker
    rows = read_membership(spark, "s3://lake/in/day1").collect()
    assert [r.user_id for r in rows] == ["u1"]  # the sibling prefix day1-old is not part of day1
    assert rows[0].source_file == "s3://lake/in/day1/part-1.csv"  # named as the user knows it


def test_s3_input_missing_a_column_names_the_s3_uri(spark, moto_server):
    import boto3

    boto3.client("s3").create_bucket(Bucket="lake2")
    boto3.client("s3").put_object(Bucket="lake2", Key="in/x.csv", Body=b"user_id,id_type,id_value\nu1,email,a@x.com\n")
    with pytest.raises(InputError, match=r"s3://lake2/in/: missing required column.*segment_id"):
        read_membership(spark, "s3://lake2/in/")


def test_missing_s3_prefix_is_an_input_error(spark, moto_server):
    import boto3

    boto3.client("s3").create_bucket(Bucket="empty-lake")
    with pytest.raises(InputError, match="no objects"):
        read_membership(spark, "s3://empty-lake/nothing/")


def test_s3_bucket_root_and_exact_exists(spark, moto_server):
    import boto3

    from audience_relay.pipeline import storage

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="rootbkt")
    s3.put_object(Bucket="rootbkt", Key="part-1.csv", Body=(HEADER + "u1,email,a@x.com,seg_1,\n").encode())
    assert [r.user_id for r in read_membership(spark, "s3://rootbkt").collect()] == ["u1"]
    s3.create_bucket(Bucket="work")
    s3.put_object(Bucket="work", Key="snap/destination_id=meta_ads_eu/x.parquet", Body=b"x")
    assert not storage.exists("s3://work/snap/destination_id=meta_ads")
    assert storage.exists("s3://work/snap/destination_id=meta_ads_eu")
    assert storage.exists("s3://work/snap/destination_id=meta_ads_eu/x.parquet")


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


ROW = {"user_id": "u1", "id_type": "email", "id_value": "a@x.com", "segment_id": "s"}


def test_parquet_file_with_an_integer_user_id_is_named_with_the_column(spark, tmp_path):
    write_parquet(tmp_path / "in" / "a.parquet", [ROW])
    write_parquet(tmp_path / "in" / "b.parquet", [dict(ROW, user_id=7)])
    frame = read_membership(spark, str(tmp_path / "in"))
    with pytest.raises(InputError, match=r"in/b\.parquet: column 'user_id' is stored as INT64 in this file, expected string"):
        with naming_unreadable_files(str(tmp_path / "in")):
            frame.collect()


def test_parquet_timestamps_with_and_without_time_zone_are_read_together(spark, tmp_path):
    import datetime

    write_parquet(tmp_path / "in" / "a.parquet", [dict(ROW, updated_at=datetime.datetime(2026, 1, 1, 10))])
    write_parquet(tmp_path / "in" / "b.parquet", [dict(ROW, updated_at=datetime.datetime(2026, 1, 1, 11, tzinfo=datetime.timezone.utc))])
    rows = read_membership(spark, str(tmp_path / "in")).orderBy("updated_at").collect()
    assert [str(r.updated_at) for r in rows] == ["2026-01-01 10:00:00", "2026-01-01 11:00:00"]


def test_truncated_parquet_file_is_named(spark, tmp_path):
    good = write_parquet(tmp_path / "in" / "a.parquet", [ROW])
    cut = write_parquet(tmp_path / "in" / "b.parquet", [ROW] * 100)
    cut.write_bytes(cut.read_bytes()[:100])
    frame = read_membership(spark, str(tmp_path / "in"))
    with pytest.raises(InputError, match=r"in/b\.parquet: unreadable file \(.*not a Parquet file"):
        with naming_unreadable_files(str(tmp_path / "in")):
            frame.collect()
    good.unlink()  # now the file Spark reads the schema from: it fails on the driver, named the same way
    with pytest.raises(InputError, match=r"in/b\.parquet: unreadable file"):
        read_membership(spark, str(tmp_path / "in"))


@pytest.mark.parametrize("name", ["b.parquet", "b.csv.gz"])
def test_zero_byte_parquet_or_gzip_file_is_refused_but_an_empty_csv_is_not(spark, tmp_path, name):
    write(tmp_path / "in" / "a.csv", HEADER + "u1,email,a@x.com,seg_1,\n")
    write(tmp_path / "in" / "c.csv", "")
    (tmp_path / "in" / name).write_bytes(b"")
    with pytest.raises(InputError, match=rf"in/{name}: unreadable file \(0 bytes"):
        read_membership(spark, str(tmp_path / "in"), "parquet" if name.endswith("parquet") else "csv")
    (tmp_path / "in" / name).unlink()
    assert [r.user_id for r in read_membership(spark, str(tmp_path / "in")).collect()] == ["u1"]


def test_zero_byte_consent_parquet_file_is_refused(spark, tmp_path):
    spark.createDataFrame([("u1", "*")], "user_id string, scope string").write.parquet(str(tmp_path / "c"))
    (tmp_path / "c" / "part-9.parquet").write_bytes(b"")  # an opt-out file that was never written
    with pytest.raises(InputError, match=r"part-9\.parquet: unreadable file \(0 bytes"):
        read_consent(spark, str(tmp_path / "c"), {"meta"})


def test_truncated_gzip_file_is_found_and_named(spark, tmp_path):
    write(tmp_path / "in" / "a.csv.gz", HEADER + "u1,email,a@x.com,seg_1,\n", compress=True)
    broken = write(tmp_path / "in" / "b.csv.gz", HEADER + "".join(f"u{i},email,a{i}@x.com,seg_1,\n" for i in range(5000)), compress=True)
    broken.write_bytes(broken.read_bytes()[:3000])
    frame = read_membership(spark, str(tmp_path / "in"))
    with pytest.raises(InputError, match=r"in/b\.csv\.gz: unreadable file \(truncated or corrupt gzip"):
        with naming_unreadable_files(str(tmp_path / "in")):
            frame.collect()


def test_json_object_or_array_where_a_string_belongs_is_a_read_error(spark, tmp_path):
    lines = [ROW, dict(ROW, id_value={"a": 1}), dict(ROW, user_id=["u1"]), dict(ROW, id_value=12345678901234567890), dict(ROW, id_value="{not json")]
    path = write(tmp_path / "m.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    rows = read_membership(spark, str(path)).collect()
    assert [(r.id_value, r.read_error) for r in rows] == [
        ("a@x.com", None),
        ('{"a":1}', "id_value is a JSON object or array, expected a string"),
        ("a@x.com", "user_id is a JSON object or array, expected a string"),
        ("12345678901234567890", None),  # a number is read as its digits, exactly
        ("{not json", None),
    ]


def test_unreadable_file_error_leaves_other_failures_alone():
    assert unreadable_file_error(RuntimeError("Job aborted: executor lost"), "in/") is None


def test_truncated_parquet_staged_from_s3_is_named_by_its_s3_uri(spark, moto_server, tmp_path):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="lake3")
    good = write_parquet(tmp_path / "a.parquet", [ROW])
    s3.put_object(Bucket="lake3", Key="in/a.parquet", Body=good.read_bytes())
    s3.put_object(Bucket="lake3", Key="in/b.parquet", Body=good.read_bytes()[:50])
    frame = read_membership(spark, "s3://lake3/in/")
    with pytest.raises(InputError, match=r"^s3://lake3/in/b\.parquet: unreadable file \(s3://lake3/in/b\.parquet is not a Parquet file"):
        with naming_unreadable_files("s3://lake3/in/"):
            frame.collect()


def test_empty_files_are_found_by_listing_when_spark_reads_s3_itself(moto_server):
    """Glue and EMR read s3:// themselves: the 0-byte check lists the prefix (no request per file)."""
    import boto3

    from audience_relay.pipeline.inputs import Located, _check_files

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="lake4")
    for key, body in [("in/a.parquet", b"PAR1"), ("in/_SUCCESS", b""), ("in/", b""), ("in-old/z.parquet", b"")]:
        s3.put_object(Bucket="lake4", Key=key, Body=body)
    _check_files(Located("s3://lake4/in/", "s3://lake4/in/"), "parquet")  # the marker, folder and sibling prefix are not data
    s3.put_object(Bucket="lake4", Key="in/day=1/b.parquet", Body=b"")
    with pytest.raises(InputError, match=r"^s3://lake4/in/day=1/b\.parquet: unreadable file \(0 bytes"):
        _check_files(Located("s3://lake4/in", "s3://lake4/in"), "parquet")
    with pytest.raises(InputError, match=r"s3://lake4/nothing/: no data files"):
        _check_files(Located("s3://lake4/nothing/", "s3://lake4/nothing/"), "parquet")


def test_prepare_waits_for_the_marker_the_s3_trigger_waits_for():
    from audience_relay.pipeline.inputs import COMPLETION_MARKER
    from audience_relay.orchestration.ingest import COMPLETION_MARKER as TRIGGER_MARKER

    assert COMPLETION_MARKER == TRIGGER_MARKER


CONSENT_HEADER = "user_id,id_type,id_value,segment_id,eea_data\n"


def test_consent_columns_the_config_reads_come_as_strings_under_their_carried_names(spark, tmp_path):
    path = write(tmp_path / "a.csv", CONSENT_HEADER + "u1,email,a@x.com,s, Granted \nu2,email,b@x.com,s,\n")
    rows = read_membership(spark, str(path), consent_columns=("eea_data",)).collect()
    assert [r["consent:eea_data"] for r in rows] == [" Granted ", None]
    lines = json.dumps({**ROW, "eea_data": "denied"}) + "\n" + json.dumps(ROW) + "\n"   # a key left out is unspecified
    rows = read_membership(spark, str(write(tmp_path / "m.jsonl", lines)), consent_columns=("eea_data",)).collect()
    assert [(r["consent:eea_data"], r.read_error) for r in rows] == [("denied", None), (None, None)]
    parquet = write_parquet(tmp_path / "p" / "a.parquet", [{**ROW, "eea_data": "granted"}])
    assert read_membership(spark, str(parquet), consent_columns=("eea_data",)).first()["consent:eea_data"] == "granted"


@pytest.mark.parametrize("name, content, error", [
    # CSV: Spark's header check names the file; the names outside the data contract are not quoted.
    ("in/b.csv", HEADER + "u1,email,a@x.com,s,\n", r"in/b[.]csv: header \[user_id, id_type, id_value, segment_id, updated_at\] differs"),
    ("in/b.jsonl", json.dumps(ROW) + "\n", r"in/b[.]jsonl: missing required column\(s\) \['eea_data'\]"),
    ("in/b.parquet", None, r"in/b[.]parquet: missing required column\(s\) \['eea_data'\]"),
])
def test_a_file_without_a_consent_column_the_config_reads_is_named(spark, tmp_path, name, content, error):
    """Another file of the folder has the column: Spark would read the missing one as unspecified consent."""
    if name.endswith(".parquet"):
        write_parquet(tmp_path / "in" / "a.parquet", [{**ROW, "eea_data": "granted"}])
        write_parquet(tmp_path / name, [ROW])
    else:
        extension = name.rsplit(".", 1)[1]
        first = CONSENT_HEADER + "u1,email,a@x.com,s,granted\n" if extension == "csv" else json.dumps({**ROW, "eea_data": "granted"}) + "\n"
        write(tmp_path / f"in/a.{extension}", first)
        write(tmp_path / name, content)
    with pytest.raises(InputError, match=error):
        with naming_unreadable_files(str(tmp_path / "in")):
            read_membership(spark, str(tmp_path / "in"), consent_columns=("eea_data",)).collect()
