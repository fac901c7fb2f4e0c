"""Values that become paths cannot leave the configured roots.

Every place a value from the command line, the config, a manifest, a snapshot pointer or an S3
event becomes a local path, an S3 key, an SFTP remote path or a URL path refuses a value with a
`..`, `.` or empty segment, a separator where one segment belongs, an absolute path or a URI,
with an error that names the value and where it came from.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import boto3
import pytest
import yaml

from audience_relay.connectors.destination import Batch
from audience_relay.connectors.destinations.meta.client import MetaCustomAudiences
from audience_relay.connectors.destinations.s3.client import S3Destination
from audience_relay.connectors.files import UnsafeFileName, batch_file_name
from audience_relay.connectors.http.client import HttpApiDestination, UnsafeAudienceId
from audience_relay.connectors.retry import FailureKind
from audience_relay.connectors.state.store import BatchRecord
from audience_relay.pipeline import paths
from audience_relay.pipeline.config import DEFAULT_CONFIG, ConfigError, load_config, parse_config

BAD_RUN_IDS = ["../x", "..", ".", "", "/abs", "r1/..", "r1\n", "r1\x00", "r 1", "a" * 41, "-r1", "r1/x"]
CHECKSUM = hashlib.sha256(b"x").hexdigest()
GOOD_BATCH = {
    "destination_id": "meta_ads", "audience_id": "meta_high_value", "op": "add", "batch_number": 0, "ids": 1, "rows": 1,
    "checksum": CHECKSUM, "file": "batches/destination_id=meta_ads/audience_id=meta_high_value/op=add/part-00000-a.c000.snappy.parquet",
}
EXAMPLE = yaml.safe_load(DEFAULT_CONFIG.read_text())


# --- run ids: prepare, deliver, report, run --------------------------------------------------------

@pytest.mark.parametrize("run_id", BAD_RUN_IDS)
def test_a_run_id_that_is_not_one_safe_segment_is_refused_everywhere(run_id, tmp_path):
    from audience_relay.cli.run import RunError, command
    from audience_relay.pipeline.deliver import DeliverError, DeliverRequest, run_deliver
    from audience_relay.pipeline.prepare import PrepareError, PrepareRequest, _check_request
    from audience_relay.report.run_report import ReportError, load_report

    config = load_config(DEFAULT_CONFIG)
    with pytest.raises(PrepareError, match="run id"):
        _check_request(None, PrepareRequest("in", str(tmp_path), config, "default", run_id))
    with pytest.raises(DeliverError, match="run id"):
        run_deliver(None, DeliverRequest(str(tmp_path), run_id, config, str(tmp_path / "state.db")))
    with pytest.raises(ReportError, match="run id"):
        load_report(str(tmp_path), run_id)
    with pytest.raises(paths.UnsafePath, match=r"--run-id: run id"):
        paths.run_id(run_id, "--run-id")
    if run_id:  # `run` makes up a run id when none is given
        with pytest.raises(RunError, match="--run-id"):
            command(argparse.Namespace(run_id=run_id, out=str(tmp_path / "run-out"), input="in", consent="c", config=None,
                                       destination=None, retry_scale=0.01))
        assert not (tmp_path / "run-out").exists()


def test_a_run_id_with_a_trailing_newline_was_accepted_by_match_and_is_not_by_fullmatch():
    assert paths.RUN_ID.match("r1\n") and not paths.RUN_ID.fullmatch("r1\n")
    assert paths.run_id("2026-11-24_day-1", "--run-id") == "2026-11-24_day-1"


# --- deliver: the manifest's batches --------------------------------------------------------------

TAMPERED = [
    ("file", "../../etc/passwd"), ("file", "/etc/passwd"), ("file", "s3://other-bucket/batches/x.parquet"),
    ("file", "file:///etc/passwd"), ("file", "batches/../../../etc/passwd"), ("file", "batches/./x.parquet"),
    ("file", "batches//x.parquet"), ("file", "other/x.parquet"), ("file", "batches"), ("file", "batches\\..\\x"), ("file", None),
    ("audience_id", "../../x"), ("audience_id", "a/b"), ("audience_id", ".."), ("audience_id", ""), ("audience_id", ".hidden"),
    ("destination_id", "../meta_ads"), ("op", "../add"), ("op", "upsert"), ("batch_number", -1), ("batch_number", "0"),
    ("batch_number", True), ("checksum", "../../x"), ("checksum", CHECKSUM.upper()), ("checksum", CHECKSUM[:63] + "/"),
]


def _write_manifest(out: Path, batches: list[dict]) -> Path:
    path = out / "runs" / "r1" / "manifest.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"destinations": {"meta_ads": {}}, "batches": batches}))
    return path


@pytest.mark.parametrize("key,value", TAMPERED)
def test_a_tampered_manifest_batch_is_refused_before_anything_is_read_or_sent(key, value, tmp_path):
    from audience_relay.pipeline.deliver import DeliverRequest, run_deliver

    manifest = _write_manifest(tmp_path, [GOOD_BATCH, {**GOOD_BATCH, "batch_number": 1, key: value}])
    request = DeliverRequest(str(tmp_path), "r1", load_config(DEFAULT_CONFIG), str(tmp_path / "state" / "delivery.db"))
    with pytest.raises(paths.UnsafePath) as refused:
        run_deliver(None, request)  # no Spark: refused first
    assert f"{manifest}: batches[1].{key}" in str(refused.value) and repr(value) in str(refused.value)
    assert not (tmp_path / "state").exists()


def test_the_batches_prepare_writes_pass_the_manifest_check():
    from audience_relay.pipeline.deliver import check_manifest_paths

    check_manifest_paths({"batches": [GOOD_BATCH, {**GOOD_BATCH, "audience_id": "aud.v2", "op": "remove", "batch_number": 12}]}, "m")


def test_a_tampered_manifest_exits_2_from_the_cli(tmp_path, capsys):
    from audience_relay.cli.main import main

    _write_manifest(tmp_path, [{**GOOD_BATCH, "file": "../../../../etc/passwd"}])
    assert main(["deliver", "--out", str(tmp_path), "--run-id", "r1"]) == 2
    assert "batches[0].file: '../../../../etc/passwd'" in capsys.readouterr().err


# --- report: destinations named by the manifest ---------------------------------------------------

@pytest.mark.parametrize("destination", ["../../x", "a/b", "..", ".x"])
def test_a_report_refuses_a_manifest_destination_that_is_not_one_segment(destination, tmp_path):
    from audience_relay.report.run_report import ReportError, load_report

    manifest = _write_manifest(tmp_path, [])
    manifest.write_text(json.dumps({"destinations": {destination: {}}, "batches": [], "input_rows": 0, "rejected": {"by_reason": {}}}))
    with pytest.raises(ReportError, match=r"manifest\.json: destinations") as refused:
        load_report(str(tmp_path), "r1")
    assert repr(destination) in str(refused.value)


# --- snapshot pointers ----------------------------------------------------------------------------

@pytest.mark.parametrize("run_id", ["../../x", "/etc", "r1\n", None])
def test_a_snapshot_pointer_naming_an_unsafe_run_is_refused(run_id, tmp_path):
    from audience_relay.pipeline import snapshots

    (tmp_path / "snapshots").mkdir()
    (tmp_path / "snapshots" / "meta_ads.json").write_text(json.dumps({"run_id": run_id, "path": "/etc"}))
    with pytest.raises(paths.UnsafePath, match=r"meta_ads\.json: run_id: run id"):
        snapshots.baseline_for(str(tmp_path), "meta_ads", "r9")


@pytest.mark.parametrize("field", ["run_id", "baseline_run_id"])
def test_a_head_naming_an_unsafe_run_is_refused(field, tmp_path):
    from audience_relay.pipeline import snapshots

    (tmp_path / "snapshots").mkdir()
    head = {"run_id": "r1", "baseline_run_id": "r0", field: "../../etc"}
    (tmp_path / "snapshots" / "meta_ads.head.json").write_text(json.dumps(head))
    with pytest.raises(paths.UnsafePath, match=rf"meta_ads\.head\.json: {field}: run id"):
        snapshots.baseline_for(str(tmp_path), "meta_ads", "r9")


def test_a_snapshot_is_read_from_its_run_under_the_output_root_not_from_the_pointers_path(tmp_path):
    from audience_relay.pipeline import snapshots

    (tmp_path / "snapshots").mkdir()
    (tmp_path / "snapshots" / "meta_ads.json").write_text(json.dumps({"run_id": "r0", "path": "/etc"}))
    with pytest.raises(snapshots.SnapshotIncomplete) as missing:
        snapshots.read_previous(None, str(tmp_path), {"meta_ads": snapshots.baseline_for(str(tmp_path), "meta_ads", "r9").run_id})
    assert f"{tmp_path}/runs/r0/snapshot" in str(missing.value) and "/etc" not in str(missing.value)


@pytest.mark.parametrize("listed", ["/etc/passwd", "snapshots/../../etc/passwd", "s3://other/x", "snapshots/other/r0/members/x"])
def test_a_committed_snapshots_file_list_cannot_name_a_file_outside_its_copy(tmp_path, listed):
    from audience_relay.pipeline import paths, snapshots

    (tmp_path / "snapshots").mkdir()
    pointer = {"run_id": "r0", "path": "x", "files": [{"path": listed, "size": 1}]}
    (tmp_path / "snapshots" / "meta_ads.json").write_text(json.dumps(pointer))
    with pytest.raises((paths.UnsafePath, snapshots.SnapshotIncomplete)) as refused:
        snapshots.read_previous(None, str(tmp_path), {"meta_ads": "r0"})
    assert "snapshots/meta_ads/r0/" in str(refused.value) or "not a relative path" in str(refused.value)


# --- S3 input staged to a local folder ------------------------------------------------------------

@pytest.mark.parametrize("key", ["lake/in//etc/cron.d/x", "lake/in/../x.csv", "lake/in/./x.csv", "lake/in/a/../../x.csv"])
def test_an_s3_input_object_whose_key_would_leave_the_local_folder_is_refused(key, moto_server, tmp_path):
    from audience_relay.pipeline import storage

    client = boto3.client("s3")
    bucket = "path-safety-" + hashlib.sha256(key.encode()).hexdigest()[:12]
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="lake/in/part-0.csv", Body=b"user_id\n")
    client.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert any(item["Key"] == key for item in client.list_objects_v2(Bucket=bucket)["Contents"])
    with pytest.raises(ValueError, match="escapes its prefix") as refused:
        storage.download_prefix(f"s3://{bucket}/lake/in/", tmp_path / "staged")
    assert key in str(refused.value)
    assert not list(Path("/etc/cron.d").glob("x")) and not (tmp_path / "x.csv").exists()


# --- file destinations: SFTP remote paths and S3 keys ---------------------------------------------

def _batch(**change) -> Batch:
    values = {"run_id": "r1", "destination_id": "partner_sftp", "audience_id": "aud", "op": "add", "batch_number": 3,
              "checksum": CHECKSUM, "ids": 1, **change}
    return Batch(BatchRecord(**values), [("email", CHECKSUM)])


@pytest.mark.parametrize("field,value", [
    ("run_id", "../r1"), ("destination_id", ".."), ("audience_id", "../../etc"), ("audience_id", "a/b"), ("op", "add/../.."),
    ("checksum", "../../../../x" + "0" * 52), ("batch_number", -1),
])
def test_a_batch_file_name_never_leaves_the_destination_root(field, value, tmp_path):
    from audience_relay.connectors.destinations.sftp.client import SftpDestination

    with pytest.raises(UnsafeFileName, match=field.replace("_", r"[_ ]")):
        batch_file_name(_batch(**{field: value}))
    s3 = S3Destination("bucket", "incoming")
    with pytest.raises(UnsafeFileName):
        s3.key(_batch(**{field: value}))
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("sftp.example ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg=\n")
    sftp = SftpDestination("127.0.0.1", "relay", "/in", str(known_hosts), _ecdsa_key())
    with pytest.raises(UnsafeFileName) as refused:
        sftp.remote_path(_batch(**{field: value}))
    for destination in (s3, sftp):
        failure = destination.classify(refused.value)
        assert failure.kind is FailureKind.PERMANENT and repr(value) in failure.message


def _ecdsa_key() -> str:
    import io

    import paramiko

    text = io.StringIO()
    paramiko.ECDSAKey.generate().write_private_key(text)
    return text.getvalue()


def test_a_good_batch_file_name_stays_under_its_root():
    assert batch_file_name(_batch()) == f"r1/partner_sftp/aud/add/batch-000003-{CHECKSUM[:16]}.csv.gz"
    assert S3Destination("bucket", "/incoming/").key(_batch()).startswith("incoming/r1/partner_sftp/aud/add/")


# --- HTTP: audience ids in URL paths --------------------------------------------------------------

@pytest.mark.parametrize("audience_id", ["..", ".", "../act_1", "a/b", "a?b", "a#b", "a%2F..", " 1", ""])
def test_an_audience_id_that_is_not_one_url_path_segment_is_refused_by_the_config(audience_id):
    raw = json.loads(json.dumps(EXAMPLE))
    raw["destinations"][0]["connection"]["audience_ids"] = {"meta_high_value": audience_id}
    with pytest.raises(ConfigError, match=r"\(meta_ads\)\.connection\.audience_ids\.meta_high_value"):
        parse_config(raw, "destinations.yaml")


@pytest.mark.parametrize("audience_id", ["..", ".", "../act_1", "a/b"])
def test_the_http_connector_refuses_an_audience_id_that_would_change_the_url_path(audience_id):
    destination = HttpApiDestination("http://127.0.0.1:1", MetaCustomAudiences(), "t", audience_ids={"aud": audience_id})
    with destination:
        with pytest.raises(UnsafeAudienceId) as refused:
            destination.send(_batch())  # refused before connecting (nothing listens on port 1)
    failure = destination.classify(refused.value)
    assert failure.kind is FailureKind.PERMANENT and repr(audience_id) in failure.message


# --- config: the roots themselves -----------------------------------------------------------------

@pytest.mark.parametrize("remote_dir", ["../incoming", "/incoming/../../etc", "/incoming/./x", "/incoming//x", "incoming", "/in\ncoming"])
def test_an_sftp_remote_dir_must_be_an_absolute_folder_without_dot_segments(remote_dir):
    raw = json.loads(json.dumps(EXAMPLE))
    raw["destinations"][2]["connection"]["remote_dir"] = remote_dir
    with pytest.raises(ConfigError, match=r"\(partner_sftp\)\.connection\.remote_dir") as refused:
        parse_config(raw, "destinations.yaml")
    assert repr(remote_dir) in str(refused.value)


@pytest.mark.parametrize("prefix", ["../x", "a/../b", "./a", "a//b", "a/.."])
def test_an_s3_prefix_may_not_hold_dot_segments(prefix):
    raw = json.loads(json.dumps(EXAMPLE))
    raw["destinations"].append({"id": "partner_s3", "kind": "s3", "profile": "s3_objects", "audiences": {"all": ["seg_0030"]},
                                "connection": {"bucket": "partner-drop", "prefix": prefix}})
    with pytest.raises(ConfigError, match=r"\(partner_s3\)\.connection\.prefix"):
        parse_config(raw, "destinations.yaml")


@pytest.mark.parametrize("prefix", ["", "incoming", "incoming/", "/incoming", "a.b/c..d"])
def test_ordinary_s3_prefixes_are_accepted(prefix):
    raw = json.loads(json.dumps(EXAMPLE))
    raw["destinations"].append({"id": "partner_s3", "kind": "s3", "profile": "s3_objects", "audiences": {"all": ["seg_0030"]},
                                "connection": {"bucket": "partner-drop", "prefix": prefix}})
    assert parse_config(raw, "destinations.yaml").destinations[-1].connection.prefix == prefix


# --- S3 events: the input folder and the run ------------------------------------------------------

def _event(key: str) -> str:
    return json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "eventTime": "2026-11-24T01:02:03Z",
                                    "s3": {"bucket": {"name": "lake"}, "object": {"key": key, "sequencer": "0A1"}}}]})


@pytest.mark.parametrize("key", ["segments/../other/_SUCCESS", "segments/%2E%2E/other/_SUCCESS", "segments/./x/_SUCCESS",
                                 "segments//x/_SUCCESS", "_SUCCESS", "/_SUCCESS", "../_SUCCESS"])
def test_an_s3_event_whose_folder_would_be_normalized_elsewhere_starts_nothing(key):
    from audience_relay.orchestration.ingest import new_inputs, start_runs

    with pytest.raises(ValueError, match="S3 event key"):
        new_inputs(_event(key))

    class NoStepFunctions:
        def start_execution(self, **kwargs):
            raise AssertionError(f"started {kwargs}")

    response = start_runs([{"messageId": "m1", "body": _event(key)}], "arn:machine", "s3://lake/consent/", sfn=NoStepFunctions())
    assert response == {"batchItemFailures": [{"itemIdentifier": "m1"}]}  # retried, then the ingest dead-letter queue


def test_an_ordinary_s3_event_names_its_folder_and_a_safe_run_id():
    from audience_relay.orchestration.ingest import new_inputs

    [found] = new_inputs(_event("segments/2026-11-24/_SUCCESS"))
    assert found.uri == "s3://lake/segments/2026-11-24/" and paths.RUN_ID.fullmatch(found.run_id)


# --- the local runner: work-bucket keys mapped to a local folder ----------------------------------

@pytest.fixture
def compute(tmp_path):
    from audience_relay.orchestration.local.compute import ScriptCompute

    return ScriptCompute({"prepare": Path("jobs/prepare.py")}, "audience-relay-work", tmp_path / "work", {}, s3_client=None)


@pytest.mark.parametrize("uri", ["s3://audience-relay-work/../outside", "s3://audience-relay-work/runs/../../outside",
                                 "s3://audience-relay-work/./runs", "s3://audience-relay-work/runs/r1/.."])
def test_a_work_bucket_key_with_dot_segments_is_not_mapped_outside_the_local_folder(compute, uri):
    from audience_relay.orchestration.local.engine import JobFailed

    with pytest.raises(JobFailed, match="would leave") as refused:
        compute._local(uri)
    assert uri in str(refused.value)


def test_work_bucket_keys_map_into_the_local_folder(compute, tmp_path):
    from audience_relay.orchestration.local.engine import JobFailed

    assert compute._local("s3://audience-relay-work") == str(tmp_path / "work")
    assert compute._local("s3://audience-relay-work/runs/r1/") == f"{tmp_path / 'work'}/runs/r1/"
    with pytest.raises(JobFailed, match="would be copied outside"):   # another bucket's objects are copied to disk
        compute._local("s3://other-bucket/../x")


def test_objects_of_another_bucket_are_copied_to_disk_without_an_earlier_copys_leftovers(tmp_path, monkeypatch):
    import boto3
    from moto import mock_aws

    from audience_relay.orchestration.local.compute import ScriptCompute

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)   # moto in this process
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="lake")
        for key in ("in/day1/part-0.csv", "in/day1/_SUCCESS", "in/day1/", "in/day10/part-0.csv"):
            s3.put_object(Bucket="lake", Key=key, Body=b"x")
        compute = ScriptCompute({}, "audience-relay-work", tmp_path / "work", {}, s3)
        local = Path(compute._local("s3://lake/in/day1/"))
        assert sorted(p.name for p in local.iterdir()) == ["_SUCCESS", "part-0.csv"]   # not day10, no folder marker
        s3.delete_object(Bucket="lake", Key="in/day1/part-0.csv")
        assert sorted(p.name for p in Path(compute._local("s3://lake/in/day1/")).iterdir()) == ["_SUCCESS"]
        assert compute._local("s3://no-such-bucket/x/") == "s3://no-such-bucket/x/"   # left to the job, which names it


@pytest.mark.parametrize("argv", [["--run_id", "../../outside"], ["--run_id", "r1", "--destination", "../x"], ["--run_id", "r1/x"]])
def test_a_job_whose_run_or_destination_would_name_a_file_outside_is_not_started(compute, argv, tmp_path):
    from audience_relay.orchestration.local.engine import JobFailed

    with pytest.raises(JobFailed, match="cannot name a local file"):
        compute.run_glue_job("prepare", dict(zip(argv[::2], argv[1::2])))
    assert compute.runs == [] and not (tmp_path / "work").exists()


# --- the helpers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["..", ".", "", "a/b", ".hidden", "a\\b", "a\nb", None, 3])
def test_a_segment_is_one_name(value):
    with pytest.raises(paths.UnsafePath, match="somewhere"):
        paths.segment(value, "somewhere")


@pytest.mark.parametrize("value", ["meta_ads", "aud.v2", "audience_id=x", "23851234567890123"])
def test_ordinary_names_are_segments(value):
    assert paths.segment(value, "somewhere") == value
