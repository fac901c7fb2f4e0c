"""Delivery feedback against the HTTP emulators: every report page read, partial results kept per
destination, the PySpark consolidation into the feedback table, and `report` flagging audiences
the destination matched too little of."""
import json
from pathlib import Path

import pytest
import yaml

from audience_relay.cli.main import main
from audience_relay.jobs import feedback as feedback_job
from audience_relay.lambdas import feedback as feedback_lambda
from audience_relay.orchestration.local.engine import JobFailed
from audience_relay.orchestration.local.runner import LocalStateMachines
from audience_relay.orchestration.machines.specs import Resources
from audience_relay.pipeline.config import DEFAULT_CONFIG, parse_config
from audience_relay.pipeline.feedback import consolidate
from audience_relay.pipeline.feedback_collect import FeedbackError, FeedbackIncomplete, collect
from audience_relay.report.run_report import ReportError, RunReport, html_report, read_feedback, text_report
from audience_relay.testing.emulators.http_destination import EmulatorConfig, HttpDestinationEmulator

pytestmark = pytest.mark.integration

# Members each audience holds after the run (the manifest's adds and unchanged).
SENT = {("meta_ads", "meta_high_value"): 400, ("meta_ads", "meta_sports_fans"): 300, ("meta_ads", "meta_long_tail"): 0,
        ("google_dm", "google_high_value"): 500, ("google_dm", "google_in_market"): 200}


def feedback_config(tmp_path: Path):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for destination in raw["destinations"]:
        if destination["id"] == "meta_ads":
            destination["guards"] = {"min_match_rate": 0.5}
        if destination["id"] == "google_dm":
            destination["credentials"] = {"env": "GOOGLE_DM_TOKEN"}
            destination["connection"]["account_id"] = "1234567890"
            destination["connection"]["developer_token"] = {"env": "GOOGLE_ADS_DEVELOPER_TOKEN"}
            destination["guards"] = {"min_match_rate": 0.9}
    path = tmp_path / "destinations.yaml"
    path.write_text(yaml.safe_dump(raw))
    return parse_config(raw, str(path))


def run_with_manifest(out: Path, run_id: str) -> None:
    audiences = {}
    for (destination, audience), members in SENT.items():
        # upsert keeps members it no longer sends (retained): the destination still holds them.
        held = {"add": members - members // 4 - members // 8, "unchanged": members // 4, "retained": members // 8}
        audiences.setdefault(destination, {})[audience] = {"members": {**held, "remove": 7}}
    manifest = {"destinations": {d: {"audiences": a} for d, a in audiences.items()}}
    (out / "runs" / run_id).mkdir(parents=True)
    (out / "runs" / run_id / "manifest.json").write_text(json.dumps(manifest))


def holding(emulator: HttpDestinationEmulator, audience: str, count: int) -> None:
    """What a delivery would have left in the emulator: `count` members added, a few removed."""
    emulator.score.members[(audience, "add")] = {("email", f"{audience}-{n:06d}") for n in range(count + 5)}
    emulator.score.members[(audience, "remove")] = {("email", f"{audience}-{n:06d}") for n in range(5)}


@pytest.fixture(autouse=True)
def tokens(monkeypatch):
    monkeypatch.setenv("GOOGLE_DM_TOKEN", "test-google-token")
    monkeypatch.setenv("GOOGLE_ADS_DEVELOPER_TOKEN", "test-developer-token")


def test_each_destination_is_asked_every_page_and_the_table_flags_low_matches(spark, tmp_path):
    config = feedback_config(tmp_path)
    out = tmp_path / "out"
    run_with_manifest(out, "r1")
    # Meta's first two report pages fail (a 500, transient): asked again.
    with HttpDestinationEmulator(EmulatorConfig(match_rate=0.8, report_page_size=1, report_failures=2)) as meta, \
            HttpDestinationEmulator(EmulatorConfig(match_rate=0.8, report_page_size=1)) as google:
        # Meta knows meta_high_value by its own id (connection.audience_ids); it also holds an audience not ours.
        holding(meta, "23851234567890123", 400)
        holding(meta, "meta_sports_fans", 300)
        holding(meta, "someone_elses_audience", 50)
        holding(google, "google_high_value", 500)   # google_in_market was never created there
        endpoints = {"meta_ads": meta.url, "google_dm": google.url}
        assert collect(config, str(out), "r1", endpoints) == {"meta_ads": 2, "google_dm": 1}
        pages = meta.score.report_pages, google.score.report_pages
    assert pages == (3, 1)   # one audience per page: Meta holds 3 audiences, Google 1 (failed answers not counted)

    parts = out / "runs" / "r1" / "feedback" / "parts"
    meta_part = json.loads((parts / "meta_ads.json").read_text())
    assert {row["audience_id"]: row["platform_audience_id"] for row in meta_part} == {
        "meta_high_value": "23851234567890123", "meta_sports_fans": "meta_sports_fans"}
    # A second collect asks nobody: the parts are kept (a retry asks only for missing ones).
    assert collect(config, str(out), "r1", {"meta_ads": "http://127.0.0.1:1", "google_dm": "http://127.0.0.1:1"}) == {}

    table = consolidate(spark, config, str(out), "r1")
    lines = {(line.destination, line.audience): line for line in read_feedback(str(out / "runs" / "r1"))}
    assert table.endswith("feedback/table") and set(lines) == set(SENT)
    high = lines[("meta_ads", "meta_high_value")]
    assert high.ids_sent == 400 and 0.6 < high.match_rate < 0.8 and high.below_threshold is False   # Meta: lower bound / sent
    google_high = lines[("google_dm", "google_high_value")]
    assert google_high.match_rate == pytest.approx(0.8, abs=0.05) and google_high.below_threshold is True   # the API's own rate, under 0.9
    assert lines[("google_dm", "google_in_market")].reported_size is None   # not there at all
    assert lines[("meta_ads", "meta_long_tail")].reported_size is None and lines[("meta_ads", "meta_long_tail")].ids_sent == 0

    report = RunReport("r1", None, 0, {}, [], [], list(lines.values()))
    printed = text_report(report)
    assert "what the destinations report holding" in printed
    assert sorted(f"{line.destination}/{line.audience}" for line in report.flagged) == [
        "google_dm/google_high_value", "google_dm/google_in_market", "meta_ads/meta_long_tail"]
    assert "LOW (< 90%)" in printed and "NOT REPORTED" in printed
    page = html_report(report)   # report.html: the same table and flags, and a chart of sent vs reported
    assert "What the destinations report holding" in page and page.count("NOT REPORTED") == 2 and "LOW (&lt; 90%)" in page
    assert "Ids sent and reported, per audience" in page and "google_dm/google_high_value" in page


def test_a_destination_failing_its_report_keeps_the_others_parts_and_the_retry_asks_only_it(spark, tmp_path, capsys):
    config = feedback_config(tmp_path)
    out = tmp_path / "out"
    run_with_manifest(out, "r2")
    with HttpDestinationEmulator(EmulatorConfig(report_page_size=10)) as meta:
        holding(meta, "meta_sports_fans", 10)
        with pytest.raises(FeedbackIncomplete, match="google_dm.*ConnectionError"):   # its endpoint is not there
            collect(config, str(out), "r2", {"google_dm": "http://127.0.0.1:1", "meta_ads": meta.url})
    parts = out / "runs" / "r2" / "feedback" / "parts"
    assert sorted(p.name for p in parts.iterdir()) == ["meta_ads.json"]
    with HttpDestinationEmulator(EmulatorConfig(report_page_size=10)) as google:
        holding(google, "google_in_market", 20)
        command = ["feedback", "--out", str(out), "--run", "r2", "--config", str(tmp_path / "destinations.yaml"),
                   "--endpoint", f"google_dm={google.url}", "--endpoint", "meta_ads=http://127.0.0.1:1"]   # Meta is not asked again
        assert main(command) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["asked"] == {"google_dm": 1}
    assert {(l.audience, l.reported_size is not None) for l in read_feedback(str(out / "runs" / "r2"))} >= {
        ("meta_sports_fans", True), ("google_in_market", True), ("google_high_value", False)}
    assert main([*command[:-2], "--endpoint", "meta_ads"]) == 2
    assert "--endpoint takes DESTINATION=URL" in capsys.readouterr().err


def test_an_unreadable_feedback_table_is_named(tmp_path):
    table = tmp_path / "runs" / "r3" / "feedback" / "table"
    table.mkdir(parents=True)
    (table / "part-0.parquet").write_bytes(b"not parquet")
    with pytest.raises(ReportError, match="part-0.parquet: unreadable feedback table"):
        read_feedback(str(tmp_path / "runs" / "r3"))


def test_google_reports_need_the_ads_api_and_its_developer_token(tmp_path, monkeypatch):
    config = feedback_config(tmp_path)
    google = next(d for d in config.destinations if d.id == "google_dm")
    with pytest.raises(FeedbackError, match=r"destinations\.google_dm\.connection\.report_base_url: .*Google Ads API"):
        collect(config, str(tmp_path), "r4", {"meta_ads": "http://127.0.0.1:1"})
    without_token = google.connection.model_copy(update={"report_base_url": "https://googleads.googleapis.com/v26", "developer_token": None})
    config = config.model_copy(update={"destinations": [google.model_copy(update={"connection": without_token})]})
    with pytest.raises(FeedbackError, match=r"google_dm\.connection\.developer_token"):
        collect(config, str(tmp_path), "r4")


class FeedbackCompute:
    """The feedback machine's Lambda and Glue job, run here against a local run layout (the work
    bucket and the config object map to local paths, as ScriptCompute maps them)."""

    def __init__(self, spark, resources: Resources, out: Path, config: Path) -> None:
        self.spark, self.resources, self.out, self.config = spark, resources, out, config
        self.invocations: list[dict] = []

    def _local(self, value: str) -> str:
        return {f"s3://{self.resources.work_bucket}": str(self.out), self.resources.config_uri: str(self.config)}.get(value, value)

    def invoke_function(self, name: str, payload: dict) -> dict:
        assert name == self.resources.feedback_function
        self.invocations.append(payload)
        return feedback_lambda.handle(payload, str(self.config), str(self.out))

    def run_glue_job(self, job_name: str, arguments: dict[str, str]) -> None:
        assert job_name == self.resources.feedback_job
        argv = [item for key, value in arguments.items() for item in (key, self._local(value))]
        if feedback_job.main(argv) != 0:
            raise JobFailed(f"{job_name} {argv} failed")

    def run_emr_step(self, cluster_id: str, args: list[str]) -> None:
        raise JobFailed("no EMR here")


def test_the_feedback_machine_asks_every_destination_at_once_and_consolidates_what_answered(spark, tmp_path):
    """Distributed Map, one Express child per destination: Google never answers its report (every
    page a 500), Meta does; Meta's part is kept and consolidated, and the machine fails naming
    Google, alerted and dead-lettered."""
    feedback_config(tmp_path)   # writes destinations.yaml, pointed at the emulators below
    out = tmp_path / "work"
    run_with_manifest(out, "r5")
    resources = Resources(feedback_concurrency=2)
    with HttpDestinationEmulator(EmulatorConfig(match_rate=0.8, report_page_size=2)) as meta, \
            HttpDestinationEmulator(EmulatorConfig(report_failures=99)) as google, \
            LocalStateMachines([], resources, retry_scale=0.0) as machines:
        holding(meta, "meta_sports_fans", 300)
        raw = yaml.safe_load((tmp_path / "destinations.yaml").read_text())
        for destination in raw["destinations"]:
            if destination["id"] == "meta_ads":
                destination["connection"]["base_url"] = meta.url
            if destination["id"] == "google_dm":
                destination["connection"]["report_base_url"] = google.url
        (tmp_path / "destinations.yaml").write_text(yaml.safe_dump(raw))
        compute = FeedbackCompute(spark, resources, out, tmp_path / "destinations.yaml")
        machines.bind(compute)
        execution = machines.run("feedback", "r5", {"run_id": "r5"}, timeout=300)
        history = machines.aws.client("stepfunctions").get_execution_history(executionArn=execution.arn, maxResults=1000)["events"]
        letters, alerts = machines.dead_letters(), machines.alerts()

    assert execution.status == "FAILED" and execution.error == "FeedbackFailed", execution.cause
    assert {"MapRunStarted", "MapRunSucceeded"} <= {event["type"] for event in history}   # a Distributed Map run
    assert sorted((i["action"], i.get("destination")) for i in compute.invocations) == [
        ("ask", "google_dm"), ("ask", "meta_ads"), ("list", None)]
    [letter] = letters
    assert letter["phase"] == "Feedback" and letter["error"]["unanswered"] == ["google_dm"]
    assert [answer["destination"] for answer in letter["error"]["errors"]] == ["google_dm"]   # with what its child caught
    assert [alert["subject"] for alert in alerts] == ["audience-relay: delivery feedback incomplete"]
    parts = out / "runs" / "r5" / "feedback" / "parts"
    assert sorted(p.name for p in parts.iterdir()) == ["meta_ads.json"]
    lines = {(line.destination, line.audience): line for line in read_feedback(str(out / "runs" / "r5"))}
    assert lines[("meta_ads", "meta_sports_fans")].reported_size is not None
    assert lines[("google_dm", "google_high_value")].reported_size is None   # not answered: NOT REPORTED in `report`
