"""Windowed file ingest against the moto server: S3 notifies SQS, windows are gathered as Lambda's
event source mapping gathers them, bad files are quarantined, repeated events change nothing,
and a window's files are one prepare run."""
import gzip
import json
import time
from pathlib import Path

import boto3
import pytest
import yaml

from audience_relay.cli.main import main
from audience_relay.orchestration.file_claims import FileClaims
from audience_relay.orchestration.ingest_window import AwsClients, WindowSettings, gather_window, landed_files
from audience_relay.orchestration.local.window_poller import receive_window
from audience_relay.pipeline.config import DEFAULT_CONFIG, parse_config
from audience_relay.pipeline.prepare import PrepareRequest, run_prepare
from tests.integration.ingest_stage import Stage, members

pytestmark = pytest.mark.integration

def window_config(tmp_path: Path):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["ingest"] = {"mode": "window", "suffix": ".csv.gz", "window_files": 100, "window_seconds": 1}
    raw["quality"] = {"row_count_band": None, "max_rejected_fraction": 1.0}
    for destination in raw["destinations"]:
        destination["sync_mode"] = "upsert"
    path = tmp_path / "window.yaml"
    path.write_text(yaml.safe_dump(raw))
    return parse_config(raw, str(path)), path


def test_one_window_becomes_one_run_bad_files_are_quarantined_and_repeated_events_change_nothing(moto_server, spark, tmp_path, caplog,
                                                                                                 postgres_server, capsys):
    caplog.set_level("INFO", logger="audience_relay.ingest")
    stage = Stage()
    good = [stage.land(f"incoming/2026-12-01/part-{n}.csv.gz", members(100 * n, 10 + n)) for n in range(3)]
    headless = stage.land("incoming/2026-12-01/headless.csv.gz", gzip.compress(b"user9,email,nine@example.com,seg_0001\n"))
    cut = members(0, 2000)
    truncated = stage.land("incoming/2026-12-01/cut.csv.gz", cut[: len(cut) // 2])
    stage.land("incoming/2026-12-01/notes.txt", b"not notified: S3 filters by suffix at the source")
    stage.land("elsewhere/part-9.csv.gz", members(900, 5))   # not under the prefix: not notified
    events = stage.sqs.receive_message(QueueUrl=stage.queue, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]
    assert len(events) == 5
    stage.sqs.send_message(QueueUrl=stage.queue, MessageBody=events[0]["Body"])   # S3 delivers at least once

    result = stage.window()

    assert (result.messages, result.retried) == (6, 0) and stage.window() is None
    [run] = stage.executions()
    assert run["run_id"].startswith("w-") and run["input"] == f"s3://{stage.work}/runs/{run['run_id']}/input/"
    assert run["consent"] == f"s3://{stage.input}/consent/"
    copied = stage.keys(stage.work, f"runs/{run['run_id']}/input/")
    assert [Path(k).name for k in copied] == ["00000-part-0.csv.gz", "00001-part-1.csv.gz", "00002-part-2.csv.gz", "_SUCCESS", "_sources.json"]
    sources = json.loads(stage.s3.get_object(Bucket=stage.work, Key=copied[-1])["Body"].read())
    assert [s["file"] for s in sources.values()] == [f.uri for f in good] and [s["etag"] for s in sources.values()] == [f.etag for f in good]
    # The bad files are moved to quarantine with their reasons, and reported on the dead-letter queue.
    quarantined = {f: f"quarantine/{f.etag}/{f.key}" for f in (headless, truncated)}
    assert stage.keys(stage.input, "quarantine/") == sorted(quarantined.values())
    assert headless.key not in stage.keys(stage.input) and truncated.key not in stage.keys(stage.input)
    letters = stage.dead_letters()
    assert [(d["file"], d["etag"], d["quarantined_to"]) for d in letters] == [
        (f.uri, f.etag, f"s3://{stage.input}/{quarantined[f]}") for f in (truncated, headless)]
    assert "truncated" in letters[0]["reason"] and "missing required column(s)" in letters[1]["reason"]
    assert "example.com" not in json.dumps(letters)   # the headless file's first row is data: not quoted
    kept = stage.s3.head_object(Bucket=stage.input, Key=quarantined[headless])["Metadata"]
    assert kept["audience-relay-source-etag"] == headless.etag and "missing required" in kept["audience-relay-reason"]
    assert [stage.claims.outcome(f)["state"] for f in (*good, headless, truncated)] == ["started"] * 3 + ["quarantined"] * 2
    assert {stage.claims.outcome(f)["run_id"] for f in good} == {run["run_id"]}

    # Every event again (S3 redelivers): nothing starts, nothing is quarantined or reported twice.
    for event in events:
        stage.sqs.send_message(QueueUrl=stage.queue, MessageBody=event["Body"])
    caplog.clear()
    assert stage.window().retried == 0
    judged = [json.loads(r.getMessage()) for r in caplog.records if r.name == "audience_relay.ingest"]
    assert sorted(e["claim"] for e in judged if e["event"] == "ingest.file") == ["done"] * 5
    assert [e["event"] for e in judged if e["event"] != "ingest.file"] == []   # no check, copy, quarantine or start
    assert len(stage.executions()) == 1 and stage.dead_letters() == []

    # The window's folder is one prepare run over all three good files.
    config, config_path = window_config(tmp_path)
    summary = run_prepare(spark, PrepareRequest(input=run["input"], out=str(tmp_path / "out"), config=config,
                                                config_source=str(config_path), run_id=run["run_id"]))
    manifest = json.loads(Path(summary["manifest"]).read_text())
    assert manifest["input_rows"] == 10 + 11 + 12
    assert sorted(Path(f).name for f in manifest["inputs"]["files"]) == [Path(k).name for k in copied[:3]]
    # The run catalog records the run's accounting, the numbers `report` shows.
    dsn = postgres_server.create_database("window_run")
    assert main(["catalog", "--dsn", dsn, "migrate"]) == 0
    assert main(["catalog", "--dsn", dsn, "record", "--out", str(tmp_path / "out"), "--run", run["run_id"]]) == 0
    capsys.readouterr()
    assert main(["catalog", "--dsn", dsn, "show", "--run", run["run_id"]]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["trigger"], shown["input_uri"]) == ("window", run["input"])
    assert {line["destination_id"] for line in shown["accounting"]} == {d.id for d in config.active_destinations}
    assert all(line["input_rows"] == 33 and line["reconciles"] and line["status"] == "NOT_DELIVERED" for line in shown["accounting"])


def test_windows_close_at_their_file_count_and_every_file_runs_once(moto_server):
    stage = Stage(window_files=2)
    files = [stage.land(f"incoming/f{n}.csv.gz", members(10 * n, 3)) for n in range(5)]
    results = []
    while result := stage.window():
        results.append(result)
    assert [r.messages for r in results] == [2, 2, 1]
    runs = stage.executions()
    assert len(runs) == 3
    inputs = [json.loads(stage.s3.get_object(Bucket=stage.work, Key=f"runs/{r['run_id']}/input/_sources.json")["Body"].read())
              for r in runs]
    assert sorted(s["file"] for found in inputs for s in found.values()) == sorted(f.uri for f in files)


def test_a_window_closes_at_its_time_limit_with_fewer_files(moto_server):
    stage = Stage(window_files=50, window_seconds=2)
    for n in range(3):
        stage.land(f"incoming/f{n}.csv.gz", members(n, 2))
    started = time.monotonic()
    gathered = receive_window(stage.sqs, stage.queue, 50, 2, idle_seconds=1)
    assert len(gathered) == 3 and time.monotonic() - started < 15
    assert receive_window(stage.sqs, stage.queue, 50, 2, idle_seconds=1) == []   # invisible now; an empty queue gives no window


def test_a_file_another_live_window_holds_is_retried_and_a_stale_claim_is_taken_over(moto_server):
    stage = Stage(visibility_seconds=1)
    held = stage.land("incoming/held.csv.gz", members(0, 3))
    live = FileClaims(stage.settings.state_table, "a-live-window", 60)
    assert live.claim(held).claim.value == "ours"
    assert stage.window().retried == 1 and stage.executions() == []   # left on the queue, not dropped
    # That window died (a Lambda timeout): once its claim is stale, the retry takes the file over.
    dead = FileClaims(stage.settings.state_table, "a-dead-window", 60, clock=lambda: time.time() - 3600)
    dead.release(held)
    live.release(held)
    assert dead.claim(held).claim.value == "ours"
    time.sleep(1.5)   # the message's visibility timeout (1 s)
    assert stage.window().retried == 0
    [run] = stage.executions()
    assert stage.claims.outcome(held)["run_id"] == run["run_id"]


def test_a_window_whose_run_cannot_start_gives_its_files_back_for_the_retry(moto_server):
    stage = Stage()
    landed = stage.land("incoming/a.csv.gz", members(0, 3))
    [message] = stage.sqs.receive_message(QueueUrl=stage.queue, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]
    record = [{"messageId": message["MessageId"], "body": message["Body"]}]
    broken = WindowSettings(**{**stage.settings.__dict__, "scheduler_arn": stage.scheduler + "-missing"})
    assert gather_window(record, broken, AwsClients.default()) == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    assert stage.claims.outcome(landed) is None   # released: the retry judges it again
    assert gather_window(record, stage.settings, AwsClients.default()) == {"batchItemFailures": []}
    assert stage.claims.outcome(landed)["state"] == "started" and len(stage.executions()) == 1


def test_a_message_that_is_not_an_s3_event_is_retried_and_named(moto_server):
    assert landed_files(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})) == []
    with pytest.raises(ValueError, match="not an S3 event"):
        landed_files("not json")
    stage = Stage()
    response = gather_window([{"messageId": "m-1", "body": "{}"}], stage.settings, AwsClients.default())
    assert response == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}


def test_files_with_different_headers_become_separate_runs_and_an_overwritten_file_waits_for_its_own_event(moto_server):
    stage = Stage()
    plain = [stage.land(f"incoming/plain-{n}.csv.gz", members(10 * n, 2)) for n in range(2)]
    dated = stage.land("incoming/dated.csv.gz", gzip.compress(b"user_id,id_type,id_value,segment_id,updated_at\nu,email,x@y.z,seg_0001,\n"))
    stale = stage.land("incoming/rewritten.csv.gz", members(50, 2))
    [*_, event] = stage.sqs.receive_message(QueueUrl=stage.queue, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]
    assert landed_files(event["Body"])[0] == stale
    newer = stage.land("incoming/rewritten.csv.gz", members(60, 3))   # overwritten before the window judged it
    assert stage.window().retried == 0
    runs = stage.executions()
    inputs = sorted(sorted(s["file"] for s in json.loads(stage.s3.get_object(
        Bucket=stage.work, Key=f"runs/{r['run_id']}/input/_sources.json")["Body"].read()).values()) for r in runs)
    # Spark reads every CSV file of an input with one header: one run per header. The stale
    # version is skipped and its claim given back; the newer version ran from its own event.
    assert inputs == [[dated.uri], sorted([plain[0].uri, plain[1].uri, newer.uri])]
    assert stage.claims.outcome(stale) is None and stage.claims.outcome(newer)["state"] == "started"


class StartsThenFails:
    """Step Functions starting the execution but the answer getting lost (a timeout)."""

    def __init__(self, sfn) -> None:
        self.sfn = sfn

    def start_execution(self, **request):
        self.sfn.start_execution(**request)
        raise ConnectionError("read timeout")

    def __getattr__(self, name):
        return getattr(self.sfn, name)


def test_a_run_that_started_though_its_start_failed_is_not_started_again_with_other_files(moto_server):
    stage = Stage()
    first = stage.land("incoming/a.csv.gz", members(0, 3))
    [message] = stage.sqs.receive_message(QueueUrl=stage.queue, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]
    record = {"messageId": message["MessageId"], "body": message["Body"]}
    lossy = AwsClients(boto3.client("s3"), boto3.client("sqs"), StartsThenFails(boto3.client("stepfunctions")), boto3.resource("dynamodb"))
    # The window checks whether the execution exists: it does, so the file is settled as started.
    assert gather_window([record], stage.settings, lossy) == {"batchItemFailures": []}
    [run] = stage.executions()
    assert stage.claims.outcome(first)["run_id"] == run["run_id"]
    # A window dying between the start and the settle leaves the claim `starting`; once stale, the
    # next window finds that run started and does not prepare the file again with other files.
    table = boto3.resource("dynamodb").Table(stage.settings.state_table)
    table.update_item(Key={"pk": f"FILE#{first.uri}", "sk": f"ETAG#{first.etag}"}, UpdateExpression="SET #s = :s, claimed_at = :t",
                      ExpressionAttributeNames={"#s": "state"}, ExpressionAttributeValues={":s": "starting", ":t": int(time.time()) - 3600})
    second = stage.land("incoming/b.csv.gz", members(10, 3))
    [message_b] = [m for m in stage.sqs.receive_message(QueueUrl=stage.queue, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]
                   if landed_files(m["Body"]) == [second]]
    records = [record, {"messageId": message_b["MessageId"], "body": message_b["Body"]}]
    assert gather_window(records, stage.settings, AwsClients.default()) == {"batchItemFailures": []}
    assert stage.claims.outcome(first)["state"] == "started" and stage.claims.outcome(first)["run_id"] == run["run_id"]
    runs = stage.executions()
    assert len(runs) == 2 and stage.claims.outcome(second)["run_id"] != run["run_id"]


def test_a_slow_window_whose_claim_was_taken_over_starts_nothing_with_that_file(moto_server, monkeypatch):
    stage = Stage()
    landed = stage.land("incoming/a.csv.gz", members(0, 3))
    [message] = stage.sqs.receive_message(QueueUrl=stage.queue, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]
    from audience_relay.orchestration import ingest_window

    real_judge = ingest_window.Window._judge

    def judged_while_another_window_takes_over(window, file):
        verdict = real_judge(window, file)
        boto3.resource("dynamodb").Table(stage.settings.state_table).update_item(
            Key={"pk": f"FILE#{file.uri}", "sk": f"ETAG#{file.etag}"}, UpdateExpression="SET #w = :w",
            ExpressionAttributeNames={"#w": "window"}, ExpressionAttributeValues={":w": "the-window-that-took-over"})
        return verdict

    monkeypatch.setattr(ingest_window.Window, "_judge", judged_while_another_window_takes_over)
    response = gather_window([{"messageId": message["MessageId"], "body": message["Body"]}], stage.settings, AwsClients.default())
    assert response == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    assert stage.executions() == [] and stage.claims.outcome(landed)["window"] == "the-window-that-took-over"


def test_the_ingest_command_runs_windows_from_the_queue_until_it_is_empty(moto_server, tmp_path, capsys):
    stage = Stage()
    files = [stage.land(f"incoming/f{n}.csv.gz", members(10 * n, 2)) for n in range(3)]
    _, config_path = window_config(tmp_path)
    settings = stage.settings
    assert main(["ingest", "--queue-url", stage.queue, "--scheduler-arn", settings.scheduler_arn, "--consent", settings.consent_uri,
                 "--state-table", settings.state_table, "--work-bucket", settings.work_bucket,
                 "--dead-letter-queue-url", settings.dead_letter_queue_url, "--config", str(config_path), "--idle-seconds", "1"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == [{"window": 1, "messages": 3, "retried": 0}, {"windows": 1}]
    [run] = stage.executions()
    assert {stage.claims.outcome(f)["run_id"] for f in files} == {run["run_id"]}
    # A config not in window mode is refused: its mirror destinations would lose everyone missing from a window.
    assert main(["ingest", "--queue-url", stage.queue, "--scheduler-arn", settings.scheduler_arn, "--consent", settings.consent_uri,
                 "--state-table", settings.state_table, "--work-bucket", settings.work_bucket,
                 "--dead-letter-queue-url", settings.dead_letter_queue_url, "--idle-seconds", "1"]) == 2
    assert "ingest.mode is 'marker'; windows of files need ingest.mode: window" in capsys.readouterr().err
