"""prepare -> deliver on generated data: HTTP emulators and S3 on moto, quota deferral and resume."""
import json

import boto3
import pytest
import yaml

from audience_relay.cli.main import main
from audience_relay.pipeline.config import DEFAULT_CONFIG
from audience_relay.pipeline.generator import GeneratorSpec, generate
from audience_relay.testing.emulators.http_destination import EmulatorConfig, HttpDestinationEmulator

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prepared(spark, moto_server, sftp_server, tmp_path_factory):
    sftp = sftp_server
    root = tmp_path_factory.mktemp("deliver")
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    meta, google, partner_sftp = raw["destinations"][:3]   # the active three; the paused ad platforms are left out
    key = boto3.client("secretsmanager").create_secret(Name="audience-relay/partner-sftp-key", SecretString=sftp.private_key)
    partner_sftp.update(
        credentials={"secret_arn": key["ARN"]}, max_batch_size=1500,
        connection={"host": "127.0.0.1", "port": sftp.port, "username": sftp.username,
                    "remote_dir": str(sftp.root / "deliver-job"), "known_hosts": str(sftp.known_hosts)},
    )
    secret = boto3.client("secretsmanager").create_secret(Name="audience-relay/google-dm", SecretString="google-token")
    google["credentials"] = {"secret_arn": secret["ARN"]}
    meta.update(max_batch_size=300)
    google.update(max_batch_size=300)
    files = {"id": "partner_s3", "kind": "s3", "profile": "s3_objects", "id_types": ["email"], "max_batch_size": 2000,
             "sync_mode": "upsert", "connection": {"bucket": "partner-drop", "prefix": "incoming"},
             "audiences": {"partner_all": ["seg_0001", "seg_0003"]}}
    raw["destinations"] = [meta, google, partner_sftp, files]
    config = root / "destinations.yaml"
    config.write_text(yaml.safe_dump(raw))
    day = generate(spark, GeneratorSpec(records=6_000, seed=21), root / "day1")
    assert main(["prepare", "--input", day["membership"], "--consent", day["consent"], "--out", str(root / "out"),
                 "--config", str(config), "--run-id", "d1"]) == 0
    return root, config, json.loads((root / "out" / "runs" / "d1" / "manifest.json").read_text())


def deliver(root, config, meta_url, google_url, capsys):
    capsys.readouterr()
    code = main(["deliver", "--out", str(root / "out"), "--run-id", "d1", "--config", str(config),
                 "--endpoint", f"meta_ads={meta_url}", "--endpoint", f"google_dm={google_url}", "--workers", "2"])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_quota_deferral_then_resume_delivers_everything_once(prepared, sftp_server, capsys):
    sftp = sftp_server
    root, config, manifest = prepared
    boto3.client("s3").create_bucket(Bucket="partner-drop")
    expected = {d: sum(1 for b in manifest["batches"] if b["destination_id"] == d) for d in ("meta_ads", "google_dm", "partner_sftp", "partner_s3")}
    assert expected["google_dm"] > 4
    with HttpDestinationEmulator() as meta, HttpDestinationEmulator(EmulatorConfig(requests_per_minute=300, requests_per_day=3)) as google:
        code, first = deliver(root, config, meta.url, google.url, capsys)
        assert code == 3 and first["status"] == "QUOTA_DEFERRED" and first["resume_at"]
        assert first["destinations"]["meta_ads"]["snapshot_committed"] and first["destinations"]["partner_s3"]["snapshot_committed"]
        assert not first["destinations"]["google_dm"]["snapshot_committed"]
        assert first["destinations"]["google_dm"]["batches"]["delivered"] == 3
        partial = first["destinations"]["google_dm"]["accounting"]
        assert partial["reconciles"] and 0 < partial["rows"]["delivered"] and partial["rows"]["pending"] > 0
        assert not (root / "out" / "snapshots" / "google_dm.json").exists()  # a partial run is no baseline
        written = json.loads((root / "out" / "runs" / "d1" / "delivery" / "summary.json").read_text())
        assert written["status"] == "QUOTA_DEFERRED" and written["resume_at"] == first["resume_at"]
        google.next_day()
        google.config.requests_per_day = 1000
        code, second = deliver(root, config, meta.url, google.url, capsys)
    assert code == 0 and second["status"] == "SUCCEEDED"
    assert second["destinations"]["meta_ads"]["sent_now"] == 0  # nothing is sent twice
    for name, report in second["destinations"].items():
        prepared_rows = manifest["destinations"][name]["accounting"]["rows"]
        assert report["accounting"]["reconciles"] and report["accounting"]["rows"]["delivered"] == prepared_rows["to_deliver"]
    for name, emulator in (("meta_ads", meta), ("google_dm", google)):
        assert len(emulator.score.accepted) == expected[name] and emulator.score.duplicates == 0
        assert emulator.score.refused["oversize"] == 0
    assert google.score.max_requests_in(60.0) <= 300
    assert ("23851234567890123", "add") in meta.score.members  # sent under Meta's own audience id
    assert ("meta_sports_fans", "add") in meta.score.members  # unmapped audiences go by name
    assert len(list((sftp.root / "deliver-job").rglob("*.csv.gz"))) == expected["partner_sftp"] > 0
    assert not list((sftp.root / "deliver-job").rglob(".*.partial"))
    objects = boto3.client("s3").list_objects_v2(Bucket="partner-drop", Prefix="incoming/")["KeyCount"]
    assert objects == expected["partner_s3"]
    pointer = json.loads((root / "out" / "snapshots" / "google_dm.json").read_text())
    assert pointer["run_id"] == "d1"


def test_unknown_run_exits_2(prepared, capsys):
    root, config, _ = prepared
    assert main(["deliver", "--out", str(root / "out"), "--run-id", "nope", "--config", str(config)]) == 2
    assert "no manifest" in capsys.readouterr().err


def test_permanently_refused_batches_are_dead_lettered_and_can_be_replayed(prepared, capsys):
    root, config, manifest = prepared
    out = root / "replay-out"
    import shutil

    shutil.copytree(root / "out" / "runs" / "d1", out / "runs" / "d1")
    with HttpDestinationEmulator(EmulatorConfig(max_batch=10)) as refusing:  # every batch is "too large"
        code, summary = _deliver_only(out, config, "google_dm", refusing.url, capsys)
    assert code == 1 and summary["status"] == "FAILED" and summary["dead_letters"] > 0
    capsys.readouterr()
    assert main(["dead-letters", "--out", str(out), "--run-id", "d1"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(listed) == summary["dead_letters"] and all("TOO_MANY_AUDIENCE_MEMBERS" in letter["error"] for letter in listed)
    assert main(["dead-letters", "--out", str(out), "--run-id", "d1", "--replay"]) == 0
    with HttpDestinationEmulator() as accepting:
        code, summary = _deliver_only(out, config, "google_dm", accepting.url, capsys)
    assert code == 0 and summary["dead_letters"] == 0 and summary["destinations"]["google_dm"]["snapshot_committed"]


def _deliver_only(out, config, destination, url, capsys):
    capsys.readouterr()
    code = main(["deliver", "--out", str(out), "--run-id", "d1", "--config", str(config), "--destination", destination,
                 "--endpoint", f"{destination}={url}"])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_deliver_keeps_its_ledger_in_dynamodb(prepared, capsys):
    import shutil

    from audience_relay.connectors.state.dynamodb import DynamoStateStore, create_table

    root, config, manifest = prepared
    out = root / "dynamo-out"
    shutil.copytree(root / "out" / "runs" / "d1", out / "runs" / "d1")
    create_table("audience-relay-delivery")
    with HttpDestinationEmulator() as emulator:
        capsys.readouterr()
        code = main(["deliver", "--out", str(out), "--run-id", "d1", "--config", str(config), "--destination", "meta_ads",
                     "--endpoint", f"meta_ads={emulator.url}", "--state", "dynamodb://audience-relay-delivery"])
    assert code == 0
    ledger = DynamoStateStore("audience-relay-delivery").batches("d1", "meta_ads")
    assert len(ledger) == sum(1 for b in manifest["batches"] if b["destination_id"] == "meta_ads")
    assert {r.state.value for r in ledger} == {"delivered"} and len(emulator.score.accepted) == len(ledger)


def test_a_run_overtaken_by_a_newer_committed_run_sends_nothing_and_never_becomes_the_baseline(prepared, capsys):
    """d1 was prepared against no baseline; d2 has been committed since (d1 deferred over midnight,
    the next run delivered): d1's removals and adds are against a state the destination no longer
    holds, so not one of its batches may go out."""
    import shutil

    root, config, manifest = prepared
    out = root / "superseded-out"
    shutil.copytree(root / "out" / "runs" / "d1", out / "runs" / "d1")
    (out / "snapshots").mkdir()
    (out / "snapshots" / "meta_ads.json").write_text(json.dumps({"run_id": "d2", "path": "x"}))
    with HttpDestinationEmulator() as emulator:
        code, summary = _deliver_only(out, config, "meta_ads", emulator.url, capsys)
    report = summary["destinations"]["meta_ads"]
    assert code == 4 and summary["status"] == "SUPERSEDED" and report["status"] == "SUPERSEDED"
    assert emulator.score.accepted == {} and report["sent_now"] == 0 and report["batches"]["delivered"] == 0
    assert not report["snapshot_committed"] and report["superseded_by"] == "d2"
    assert json.loads((out / "snapshots" / "meta_ads.json").read_text())["run_id"] == "d2"
    own = json.loads((out / "runs" / "d1" / "delivery" / "meta_ads" / "summary.json").read_text())
    assert own["status"] == "SUPERSEDED" and own["superseded_by"] == "d2"   # what the state machine reads


def _leases(table: str, current_seconds: float):
    """A lease table whose `meta_ads` lease was held by `execution-old` (its token now stale) and
    is held by `execution-new` for `current_seconds`."""
    from audience_relay.connectors.state.dynamodb import create_table
    from audience_relay.connectors.state.lease import LeaseLock

    create_table(table)
    lock = LeaseLock(table)
    stale = lock.acquire("meta_ads", "execution-old", 60)
    lock.release(stale)
    return lock, stale, lock.acquire("meta_ads", "execution-new", current_seconds)


def test_deliver_under_the_machines_lease_renews_it_and_a_stale_token_is_fenced_out(prepared, capsys):
    import shutil

    root, config, manifest = prepared
    out = root / "fenced-out"
    shutil.copytree(root / "out" / "runs" / "d1", out / "runs" / "d1")
    lock, stale, current = _leases("audience-relay-fenced", 5)  # nearly expired: the job's heartbeat must extend it
    arguments = ["deliver", "--out", str(out), "--run-id", "d1", "--config", str(config), "--destination", "meta_ads",
                 "--state", "dynamodb://audience-relay-fenced", "--lease-seconds", "600"]
    with HttpDestinationEmulator() as emulator:
        capsys.readouterr()
        code = main([*arguments, "--endpoint", f"meta_ads={emulator.url}", "--fence-owner", "execution-old", "--fence-token", str(stale.token)])
        refused = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert code == 1 and refused["destinations"]["meta_ads"]["fenced"] > 0 and not emulator.score.accepted
        code = main([*arguments, "--endpoint", f"meta_ads={emulator.url}", "--fence-owner", "execution-new", "--fence-token", str(current.token)])
    assert code == 0
    assert len(emulator.score.accepted) == sum(1 for b in manifest["batches"] if b["destination_id"] == "meta_ads")
    item = lock._table.get_item(Key={"pk": "LEASE#meta_ads", "sk": "LEASE"}, ConsistentRead=True)["Item"]
    assert item["owner"] == "execution-new" and float(item["expires_at"]) > current.expires_at + 500


def test_a_former_lease_holder_cannot_commit_the_snapshot(prepared, capsys):
    """The holder delivered every batch and was lost before committing (its pointer write never
    happened); a late worker of the former holder, finding nothing to send, must not commit."""
    import shutil

    root, config, _ = prepared
    out = root / "stale-commit-out"
    shutil.copytree(root / "out" / "runs" / "d1", out / "runs" / "d1")
    _, stale, current = _leases("audience-relay-stale", 600)
    arguments = ["deliver", "--out", str(out), "--run-id", "d1", "--config", str(config), "--destination", "meta_ads",
                 "--state", "dynamodb://audience-relay-stale"]
    with HttpDestinationEmulator() as emulator:
        capsys.readouterr()
        fence = ["--endpoint", f"meta_ads={emulator.url}", "--fence-owner", "execution-new", "--fence-token", str(current.token)]
        assert main([*arguments, *fence]) == 0
        (out / "snapshots" / "meta_ads.json").unlink()  # as if the holder died just before its commit
        capsys.readouterr()
        code = main([*arguments, "--endpoint", f"meta_ads={emulator.url}", "--fence-owner", "execution-old", "--fence-token", str(stale.token)])
        late = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["destinations"]["meta_ads"]
        assert code == 1 and late["status"] == "FAILED" and late["fenced"] == 1 and not late["snapshot_committed"]
        assert not (out / "snapshots" / "meta_ads.json").exists()
        assert main([*arguments, *fence]) == 0  # the holder, resumed, commits
    assert json.loads((out / "snapshots" / "meta_ads.json").read_text())["run_id"] == "d1"


def test_workers_stop_sending_when_the_lease_cannot_be_renewed(prepared, capsys):
    """DynamoDB refuses the heartbeat's renewals (injected at the SDK of the driver, where the
    heartbeat runs): nobody has taken the lease over, but nobody can confirm it either. The
    workers stop once less than a quarter of it is left, instead of sending on an expired lease."""
    import shutil
    import time

    from botocore.exceptions import ClientError

    from audience_relay.connectors.state.dynamodb import create_table
    from audience_relay.connectors.state.lease import LeaseLock

    root, config, manifest = prepared
    out = root / "unrenewed-out"
    shutil.copytree(root / "out" / "runs" / "d1", out / "runs" / "d1")
    create_table("audience-relay-unrenewed")
    lease = LeaseLock("audience-relay-unrenewed").acquire("meta_ads", "execution-1", 4)

    renewals = []

    def refuse_renewals(params, **_):   # all but the first: the job starts holding the lease
        body = params["body"].decode() if isinstance(params["body"], bytes) else params["body"]
        if '"LEASE#' in body and len(renewals.append(1) or renewals) > 1:
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "renewal refused (injected)"}}, "UpdateItem")

    session = boto3._get_default_session()._session
    session.register("before-call.dynamodb.UpdateItem", refuse_renewals)
    try:
        with HttpDestinationEmulator(EmulatorConfig(on_accept=lambda _: time.sleep(1.0))) as emulator:
            capsys.readouterr()
            code = main(["deliver", "--out", str(out), "--run-id", "d1", "--config", str(config), "--destination", "meta_ads",
                         "--state", "dynamodb://audience-relay-unrenewed", "--workers", "1", "--endpoint", f"meta_ads={emulator.url}",
                         "--fence-owner", "execution-1", "--fence-token", str(lease.token), "--lease-seconds", "4"])
            captured = capsys.readouterr()
            report = json.loads(captured.out.strip().splitlines()[-1])["destinations"]["meta_ads"]
    finally:
        session.unregister("before-call.dynamodb.UpdateItem", refuse_renewals)
    own = [b for b in manifest["batches"] if b["destination_id"] == "meta_ads"]
    assert len(own) >= 8   # 8 s of sending at a second a batch: twice the lease
    assert code == 1 and report["fenced"] > 0 and len(emulator.score.accepted) < len(own) and not report["snapshot_committed"]
    assert '"event": "deliver.lease_renewal_failed"' in captured.err


def test_the_lease_is_kept_alive_from_the_first_send_to_the_snapshot_commit(prepared, capsys, monkeypatch):
    """Between the last batch and the commit the job writes its outcomes and reads the ledger
    and the pointer: seconds on S3 for a large run. The heartbeat must span them, or the holder
    finds its own lease lapsed and the delivered run is never committed (CI failure at 6f498a0)."""
    import shutil
    import time

    from audience_relay.connectors.state.dynamodb import create_table
    from audience_relay.connectors.state.lease import LeaseLock
    from audience_relay.pipeline import deliver as deliver_job

    root, config, _ = prepared
    out = root / "slow-commit-out"
    shutil.copytree(root / "out" / "runs" / "d1", out / "runs" / "d1")
    create_table("audience-relay-slow-commit")
    lease = LeaseLock("audience-relay-slow-commit").acquire("meta_ads", "execution-1", 4)
    real_position, calls = deliver_job.snapshots.position, []

    def slow_pointer_read(*args):  # the read after sending answers after longer than the lease
        calls.append(1)
        if len(calls) > 1:
            time.sleep(6)
        return real_position(*args)

    monkeypatch.setattr(deliver_job.snapshots, "position", slow_pointer_read)
    with HttpDestinationEmulator() as emulator:
        capsys.readouterr()
        code = main(["deliver", "--out", str(out), "--run-id", "d1", "--config", str(config), "--destination", "meta_ads",
                     "--state", "dynamodb://audience-relay-slow-commit", "--endpoint", f"meta_ads={emulator.url}",
                     "--fence-owner", "execution-1", "--fence-token", str(lease.token), "--lease-seconds", "4"])
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["destinations"]["meta_ads"]
    assert len(calls) == 2
    assert code == 0 and report["status"] == "SUCCEEDED" and report["snapshot_committed"], report


def test_a_destination_left_out_of_the_run_for_undecided_removals_ends_blocked_naming_the_decision(prepared, capsys):
    """Prepare leaves a destination out while its last run's held removals wait for a decision;
    its machine still delivers the run for it. Nothing to send must not read as SUCCEEDED, nor as
    a crash the machine retries: BLOCKED (exit 6), with the command that unblocks it."""
    import shutil

    root, config, manifest = prepared
    out = root / "blocked-out"
    shutil.copytree(root / "out" / "runs" / "d1", out / "runs" / "d1")
    edited = {**manifest, "blocked": {"meta_ads": {"run_id": "d0", "audiences": ["meta_high_value"]}},
              "destinations": {d: s for d, s in manifest["destinations"].items() if d != "meta_ads"},
              "batches": [b for b in manifest["batches"] if b["destination_id"] != "meta_ads"]}
    (out / "runs" / "d1" / "manifest.json").write_text(json.dumps(edited))
    capsys.readouterr()
    code = main(["deliver", "--out", str(out), "--run-id", "d1", "--config", str(config), "--destination", "meta_ads"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 6 and summary["status"] == "BLOCKED", summary
    entry = json.loads((out / "runs" / "d1" / "delivery" / "meta_ads" / "summary.json").read_text())
    assert entry["status"] == "BLOCKED" and entry["blocked_by"] == {"run_id": "d0", "audiences": ["meta_high_value"]}
    assert "audience-relay approve-removals --run d0 --destination meta_ads" in entry["note"]
    assert entry["batches"]["delivered"] == 0


def test_deliver_logs_counts_per_destination_and_emits_emf_metrics_without_identifiers(prepared, capsys):
    import shutil

    import pyarrow.parquet as pq

    from tests.unit.test_metrics import assert_valid_emf

    root, config, manifest = prepared
    out = root / "metrics-out"
    shutil.copytree(root / "out" / "runs" / "d1", out / "runs" / "d1")
    with HttpDestinationEmulator() as emulator:
        capsys.readouterr()
        code = main(["deliver", "--out", str(out), "--run-id", "d1", "--config", str(config), "--destination", "meta_ads",
                     "--endpoint", f"meta_ads={emulator.url}"])
    assert code == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    own = [b for b in manifest["batches"] if b["destination_id"] == "meta_ads"]
    (metrics,) = [r for r in records if "_aws" in r and r.get("Destination") == "meta_ads"]
    assert_valid_emf(metrics)
    assert metrics["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "AudienceRelay" and metrics["run_id"] == "d1"
    assert (metrics["BatchesSent"], metrics["IdsDelivered"], metrics["BatchesDeferred"], metrics["BatchesFailed"], metrics["Deferrals"]) == (
        len(own), sum(b["ids"] for b in own), 0, 0, 0)
    (job,) = [r for r in records if "_aws" in r and r.get("Job") == "deliver"]
    assert_valid_emf(job)
    (done,) = [r for r in records if r.get("event") == "deliver.destination_done"]
    assert (done["run_id"], done["destination"], done["status"], done["batches_sent"]) == ("d1", "meta_ads", "SUCCEEDED", len(own))
    assert done["rows"]["delivered"] == manifest["destinations"]["meta_ads"]["accounting"]["rows"]["to_deliver"] and done["seconds"] > 0
    raw = {v for v in pq.read_table(root / "day1" / "membership", columns=["id_value"]).column("id_value").to_pylist() if v and len(v) > 4}
    assert not [value for value in raw if any(value in line for line in lines)]  # counts and ids of runs only, never a member
