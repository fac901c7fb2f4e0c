import gzip
import json

import pytest

from jobs.inputs import InputError, detect_format, read_consent, read_membership

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


@pytest.mark.parametrize("scope", ["", "meta_adz"])
def test_consent_scope_that_names_no_destination_stops_the_run(spark, tmp_path, scope):
    path = write(tmp_path / "consent.csv", f"user_id,scope\nu1,*\nu2,{scope}\n")
    with pytest.raises(InputError, match=r"consent\.csv \(scope (None|'meta_adz')\)"):
        read_consent(spark, str(path), {"meta_ads"})


def test_consent_scopes_are_case_folded_and_parquet_is_checked_too(spark, tmp_path):
    spark.createDataFrame([(" u1 ", "META_ADS"), ("u2", "*")], "user_id string, scope string").write.parquet(str(tmp_path / "c"))
    assert sorted(read_consent(spark, str(tmp_path / "c"), {"meta_ads"}).collect()) == [("u1", "meta_ads"), ("u2", "*")]
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

    from jobs import storage

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="rootbkt")
    s3.put_object(Bucket="rootbkt", Key="part-1.csv", Body=(HEADER + "u1,email,a@x.com,seg_1,\n").encode())
    assert [r.user_id for r in read_membership(spark, "s3://rootbkt").collect()] == ["u1"]
    s3.create_bucket(Bucket="work")
    s3.put_object(Bucket="work", Key="snap/destination_id=meta_ads_eu/x.parquet", Body=b"x")
    assert not storage.exists("s3://work/snap/destination_id=meta_ads")
    assert storage.exists("s3://work/snap/destination_id=meta_ads_eu")
    assert storage.exists("s3://work/snap/destination_id=meta_ads_eu/x.parquet")
