"""The rendered definitions, executed in moto's ASL engine (patched by orchestration/local/engine.py).

The jobs are played by `ScriptedJobs`, which writes the delivery summary a real deliver
job would write; `test_run_command.py` runs the same machines with the real job scripts.
"""
import dataclasses
import datetime
import json
from collections import defaultdict

import pytest

from audience_relay.orchestration.ingest import notification_configuration, start_runs
from audience_relay.orchestration.local.engine import JobFailed
from audience_relay.orchestration.local.runner import LocalStateMachines
from audience_relay.orchestration.machines.specs import MachineSpec, Resources

pytestmark = pytest.mark.integration

GOOGLE = MachineSpec("google_dm", "http_api", "google_data_manager", "google_ads_project")
META = MachineSpec("meta_ads", "http_api", "meta_custom_audiences", "meta_ads")
SFTP_ON_EMR = MachineSpec("partner_sftp", "sftp", "sftp_gzip_csv", "partner_sftp", prepare_engine="emr", transform_job="enrich")
RESOURCES = Resources(max_deferrals=3, continue_every=2, retry_wait_seconds=1, deliver_retry_seconds=0)
RUN = {"run_id": "r1", "input": "s3://lake/in/day1/", "consent": "s3://lake/consent/"}


def _soon(seconds: int) -> str:
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class ScriptedJobs:
    """Plays prepare and deliver: deliver writes the next scripted status per destination."""

    def __init__(self, s3, statuses: dict[str, list[str]] | None = None, failing: set[str] = frozenset()) -> None:
        self.s3, self.failing = s3, failing
        self.statuses = defaultdict(lambda: ["SUCCEEDED"], {k: list(v) for k, v in (statuses or {}).items()})
        self.calls: list[tuple[str, dict]] = []

    def run_glue_job(self, job_name: str, arguments: dict[str, str]) -> None:
        self.calls.append((job_name, arguments))
        failing = arguments.get("--destination", arguments.get("--destinations"))
        if job_name in self.failing or f"{job_name}:{failing}" in self.failing:
            raise JobFailed(f"{job_name} failed (scripted)")
        if job_name == RESOURCES.deliver_job:
            destination = arguments["--destination"]
            queue = self.statuses[destination]
            scripted = queue.pop(0) if len(queue) > 1 else queue[0]
            if scripted == "LOST":   # the Glue run's answer never came (a crash, States.Timeout)
                raise JobFailed("deliver lost (scripted)")
            summary = {"status": scripted, "resume_at": _soon(1) if scripted in ("QUOTA_DEFERRED", "WAITING") else None, "retries": 2, "fenced": 0}
            if scripted == "DEFERRED_WITHOUT_RESUME_AT":
                summary["status"] = "QUOTA_DEFERRED"
            if scripted == "FENCED":
                summary.update(status="FAILED", fenced=3)
            self.s3.put_object(Bucket=RESOURCES.work_bucket, Key=f"runs/{arguments['--run_id']}/delivery/{destination}/summary.json",
                               Body=json.dumps(summary).encode())

    def run_emr_step(self, cluster_id: str, args: list[str]) -> None:
        self.calls.append(("emr-step", {"cluster": cluster_id, "args": args}))
        if "emr-step" in self.failing:
            raise JobFailed("spark-submit exited with 1 (scripted)")

    def jobs(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture(scope="module")
def machines():
    with LocalStateMachines([GOOGLE, META, SFTP_ON_EMR], RESOURCES, retry_scale=0.0) as local:
        yield local


@pytest.fixture
def jobs(machines):
    scripted = ScriptedJobs(machines.aws.client("s3"))
    machines.bind(scripted)
    machines.alerts(), machines.dead_letters()  # each test sees only its own
    return scripted


def test_happy_path_prepares_delivers_and_releases_the_lease(machines, jobs):
    execution = machines.run("destination-google_dm", "happy", RUN, timeout=60)
    assert execution.status == "SUCCEEDED", execution.cause
    assert execution.output == {"destination": "google_dm", "run_id": "r1", "status": "SUCCEEDED", "deferrals": 0, "retries": 2}
    # Prepared before the lease is taken: the shared quota is held only while delivering.
    assert execution.states[:6] == ["Init", "AlreadyPrepared", "Prepare", "MarkPrepared", "AcquireLease", "Deliver"]
    prepare, deliver = jobs.calls
    assert prepare == ("audience-relay-prepare", {"--out": "s3://audience-relay-work", "--run_id": "r1", "--config": RESOURCES.config_uri,
                                                  "--input": RUN["input"], "--consent": RUN["consent"], "--destinations": "google_dm",
                                                  "--if_prepared": "skip"})
    lease = machines.lease("google_ads_project")
    assert deliver[1]["--fence_owner"] == execution.arn and deliver[1]["--fence_token"] == lease["fencing_token"]
    assert deliver[1]["--failed_exit_code"] == deliver[1]["--deferred_exit_code"] == "0"
    assert "owner" not in lease and lease["expires_at"] == "0"
    assert machines.alerts() == [] and machines.dead_letters() == []


def test_a_failed_glue_job_is_retried_then_caught_released_alerted_and_dead_lettered(machines, jobs):
    jobs.failing = {"audience-relay-deliver"}
    execution = machines.run("destination-google_dm", "deliver-fails", RUN, timeout=60)
    assert execution.status == "FAILED" and execution.error == "DeliverFailed"
    assert jobs.jobs().count("audience-relay-deliver") == 4  # 1 + 3 retries of States.TaskFailed
    assert "owner" not in machines.lease("google_ads_project")
    [alert] = machines.alerts()
    assert alert["message"]["phase"] == "Deliver" and alert["message"]["destination"] == "google_dm"
    [letter] = machines.dead_letters()
    assert letter["phase"] == "Deliver" and letter["input"] == RUN and letter["execution"].endswith(":deliver-fails")
    assert json.loads(letter["error"]["Cause"])["JobRunState"] == "FAILED"


def test_quota_deferral_waits_until_resume_at_releasing_the_lease_then_delivers_again(machines, jobs):
    jobs.statuses["google_dm"] = ["QUOTA_DEFERRED", "SUCCEEDED"]
    execution = machines.run("destination-google_dm", "deferred-once", RUN, timeout=60)
    assert execution.status == "SUCCEEDED", execution.cause
    assert execution.output["deferrals"] == 1
    assert jobs.jobs() == ["audience-relay-prepare", "audience-relay-deliver", "audience-relay-deliver"]  # prepared once
    after_wait = execution.states[execution.states.index("WaitForQuota"):]
    assert after_wait[:4] == ["WaitForQuota", "ContinueAsNew?", "AcquireLease", "Deliver"]
    assert execution.states.index("ReleaseBeforeWait") < execution.states.index("WaitForQuota")


def test_every_second_deferral_continues_as_a_new_execution_that_skips_prepare(machines, jobs):
    jobs.statuses["google_dm"] = ["QUOTA_DEFERRED", "QUOTA_DEFERRED", "SUCCEEDED"]
    first = machines.run("destination-google_dm", "r-continue", {**RUN, "run_id": "rc"}, timeout=60)
    assert first.status == "SUCCEEDED" and first.output["status"] == "CONTINUED_AS_NEW"
    continued = [e for e in machines.executions("destination-google_dm") if e.name == "rc-google_dm-2"]
    assert continued, "the continuation was not started"
    done = machines.aws.wait(continued[0].arn, timeout=60)
    assert done.status == "SUCCEEDED" and done.output["status"] == "SUCCEEDED" and done.output["deferrals"] == 2
    assert done.output["retries"] == 6  # 2 per delivery, carried into the new execution
    assert jobs.jobs().count("audience-relay-prepare") == 1


def test_the_deferral_limit_fails_the_execution_loudly(machines, jobs):
    jobs.statuses["google_dm"] = ["QUOTA_DEFERRED"]
    execution = machines.run("destination-google_dm", "never-resumes", {**RUN, "deferrals": 3, "prepared": True}, timeout=60)
    assert execution.status == "FAILED" and execution.error == "DeferralLimitFailed"
    assert jobs.jobs() == ["audience-relay-deliver"]
    [letter] = machines.dead_letters()
    assert letter["phase"] == "DeferralLimit" and letter["deferrals"] == 3
    assert "owner" not in machines.lease("google_ads_project")


def test_a_destination_held_by_another_owner_waits_for_the_lease(machines, jobs):
    """The shared quota's lease is live: acquisition is retried (backoff scaled to 0 here) until it fails."""
    machines.aws.client("dynamodb").put_item(TableName=RESOURCES.state_table, Item={
        "pk": {"S": "LEASE#google_ads_project"}, "sk": {"S": "LEASE"}, "owner": {"S": "someone-else"},
        "expires_at": {"N": str(int(datetime.datetime.now().timestamp()) + 3600)}, "fencing_token": {"N": "40"}})
    try:
        execution = machines.run("destination-google_dm", "contended", RUN, timeout=60)
    finally:
        machines.aws.client("dynamodb").delete_item(TableName=RESOURCES.state_table,
                                                     Key={"pk": {"S": "LEASE#google_ads_project"}, "sk": {"S": "LEASE"}})
    assert execution.status == "FAILED" and execution.error == "LeaseFailed"
    assert jobs.jobs() == ["audience-relay-prepare"]  # nothing was delivered without the lease
    assert machines.binding.retry_sleeps[:20] and len(machines.binding.retry_sleeps) == 20


def test_emr_prepare_creates_runs_and_terminates_the_cluster_then_transforms(machines, jobs):
    execution = machines.run("destination-partner_sftp", "emr-ok", RUN, timeout=60)
    assert execution.status == "SUCCEEDED", execution.cause
    assert execution.states[1:6] == ["AlreadyPrepared", "CreateCluster", "Prepare", "TerminateCluster", "Transform"]
    step = jobs.calls[0][1]["args"]
    assert step[:4] == ["spark-submit", "--deploy-mode", "cluster", RESOURCES.prepare_script_uri]
    assert step[step.index("--destinations") + 1] == "partner_sftp"
    assert jobs.jobs()[1:] == ["enrich", "audience-relay-deliver"]
    (cluster,) = machines.binding.clusters.clusters.values()
    assert cluster["State"] == "TERMINATED"
    # every node installs the library wheel with its dependencies before the step runs
    assert cluster["Request"]["BootstrapActions"] == [{"Name": "install-audience-relay", "ScriptBootstrapAction": {
        "Path": RESOURCES.emr_bootstrap_uri, "Args": [RESOURCES.library_wheel_uri]}}]


def test_a_failed_emr_step_still_terminates_the_cluster(machines, jobs):
    jobs.failing = {"emr-step"}
    execution = machines.run("destination-partner_sftp", "emr-fails", RUN, timeout=60)
    assert execution.status == "FAILED" and execution.error == "PrepareFailed"
    assert "TerminateClusterAfterFailure" in execution.states
    assert [c["State"] for c in machines.binding.clusters.clusters.values()] == ["TERMINATED"]
    assert "audience-relay-deliver" not in jobs.jobs()
    assert [m["message"]["phase"] for m in machines.alerts()] == ["Prepare"]


def test_scheduler_prepares_once_and_one_failing_destination_does_not_stop_the_others(machines, jobs):
    jobs.failing = {"audience-relay-deliver:meta_ads"}
    execution = machines.run("scheduler", "sched-1", {**RUN, "run_id": "s1"}, timeout=120)
    assert execution.status == "FAILED" and execution.error == "DestinationsFailed"
    assert jobs.jobs().count("audience-relay-prepare") == 1
    prepare_args = jobs.calls[0][1]
    assert "--destinations" not in prepare_args  # one prepare for every active destination
    children = {e.name: e for s in ("google_dm", "meta_ads", "partner_sftp") for e in machines.executions(f"destination-{s}")}
    assert children["s1-google_dm"].status == "SUCCEEDED" and children["s1-partner_sftp"].status == "SUCCEEDED"
    assert children["s1-meta_ads"].status == "FAILED" and children["s1-meta_ads"].error == "DeliverFailed"
    assert "Prepare" not in children["s1-google_dm"].states and "CreateCluster" not in children["s1-partner_sftp"].states
    letters = {letter["phase"]: letter for letter in machines.dead_letters()}
    assert sorted(letters) == ["Deliver", "Destinations"]
    assert [result["destination"] for result in letters["Destinations"]["error"]] == ["meta_ads"]  # a list even for one


def test_a_failed_delivery_summary_fails_once_without_rerunning_the_job(machines, jobs):
    jobs.statuses["google_dm"] = ["FAILED"]
    execution = machines.run("destination-google_dm", "summary-failed", {**RUN, "prepared": True}, timeout=60)
    assert execution.status == "FAILED" and execution.error == "DeliveryFailed"
    assert jobs.jobs() == ["audience-relay-deliver"]  # a summary is an answer, not a crash: no Glue retry
    assert "owner" not in machines.lease("google_ads_project")


def test_a_superseded_delivery_ends_the_lifecycle_releasing_the_lease_without_failing_or_waiting(machines, jobs):
    jobs.statuses["google_dm"] = ["SUPERSEDED"]
    execution = machines.run("destination-google_dm", "superseded", {**RUN, "prepared": True}, timeout=60)
    assert execution.status == "SUCCEEDED", execution.cause
    assert execution.output["status"] == "SUPERSEDED" and execution.states[-2:] == ["ReleaseLease", "Done"]
    [(_, deliver)] = jobs.calls
    assert deliver["--superseded_exit_code"] == "0"   # routed on summary.json, not a failed Glue run
    assert "owner" not in machines.lease("google_ads_project") and machines.alerts() == []


@pytest.mark.parametrize("status, phase, exit_code", [("REMOVALS_HELD", "RemovalsHeld", "--held_exit_code"),
                                                      ("BLOCKED", "Blocked", "--blocked_exit_code")])
def test_a_delivery_waiting_for_a_person_fails_once_with_an_alert_and_releases_the_lease(machines, jobs, status, phase, exit_code):
    """REMOVALS_HELD: all else was sent; the run is not committed until a person decides on the
    held removals. BLOCKED: prepare left the destination out while an earlier run's held removals
    wait for that decision. Retrying cannot help either: the execution says so loudly, once
    (alert, dead letter to replay once decided), and frees the quota."""
    jobs.statuses["google_dm"] = [status]
    execution = machines.run("destination-google_dm", status.lower().replace("_", "-"), {**RUN, "prepared": True}, timeout=60)
    assert execution.status == "FAILED" and execution.error == f"{phase}Failed", execution.cause
    [(_, deliver)] = jobs.calls
    assert deliver[exit_code] == "0"   # routed on summary.json, not a failed Glue run
    assert [alert["message"]["phase"] for alert in machines.alerts()] == [phase]
    assert [letter["phase"] for letter in machines.dead_letters()] == [phase]
    assert "owner" not in machines.lease("google_ads_project")


def test_a_delivery_waiting_for_an_earlier_run_releases_the_lease_waits_and_delivers_after_it(machines, jobs):
    """WAITING: an earlier run of the destination is not committed yet; this run sent nothing."""
    jobs.statuses["google_dm"] = ["WAITING", "SUCCEEDED"]
    execution = machines.run("destination-google_dm", "waiting", {**RUN, "prepared": True}, timeout=60)
    assert execution.status == "SUCCEEDED", execution.cause
    assert execution.output["status"] == "SUCCEEDED" and execution.output["deferrals"] == 1
    waited = execution.states.index("WaitForQuota")
    assert "ReleaseBeforeWait" in execution.states[:waited] and execution.states.count("AcquireLease") == 2
    assert [name for name, _ in jobs.calls].count(RESOURCES.deliver_job) == 2


def test_a_delivery_fenced_out_by_a_takeover_takes_the_lease_again_and_finishes(machines, jobs):
    jobs.statuses["google_dm"] = ["FENCED", "SUCCEEDED"]
    execution = machines.run("destination-google_dm", "fenced-once", {**RUN, "prepared": True}, timeout=60)
    assert execution.status == "SUCCEEDED", execution.cause
    assert execution.states.count("AcquireLease") == 2 and "LeaseLost" in execution.states
    first, second = [args["--fence_token"] for name, args in jobs.calls if name == "audience-relay-deliver"]
    assert int(second) > int(first)  # a new token: writes under the old one stay refused


def test_a_deliver_attempt_that_failed_is_retried_under_a_new_fencing_token(machines, jobs):
    """The first attempt may still be running (a timeout, a lost answer): the retry takes the
    lease again, so the first attempt's writes are fenced out."""
    jobs.statuses["google_dm"] = ["LOST", "SUCCEEDED"]
    execution = machines.run("destination-google_dm", "lost-once", {**RUN, "prepared": True}, timeout=60)
    assert execution.status == "SUCCEEDED", execution.cause
    first, second = [args["--fence_token"] for name, args in jobs.calls if name == RESOURCES.deliver_job]
    assert int(second) > int(first) and execution.states.count("AcquireLease") == 2


def test_deliver_retries_are_counted_per_delivery_not_over_the_whole_lifecycle(machines, jobs):
    """A Deliver that answered (here: deferred) starts its retries afresh: failures spread over a
    long deferral lifecycle do not add up to the limit."""
    jobs.statuses["google_dm"] = ["LOST", "QUOTA_DEFERRED", "LOST", "LOST", "LOST", "SUCCEEDED"]
    execution = machines.run("destination-google_dm", "lost-spread", {**RUN, "prepared": True}, timeout=60)
    assert execution.status == "SUCCEEDED", execution.cause


def test_a_deliver_that_keeps_failing_ends_in_failure_after_its_attempts(machines, jobs):
    jobs.statuses["google_dm"] = ["LOST"]
    execution = machines.run("destination-google_dm", "lost-always", {**RUN, "prepared": True}, timeout=60)
    assert execution.status == "FAILED" and execution.error == "DeliverFailed"
    assert [name for name, _ in jobs.calls].count(RESOURCES.deliver_job) == 4  # the first and three retries
    assert "owner" not in machines.lease("google_ads_project")


def test_deferred_without_a_resume_time_waits_the_default_then_delivers(machines, jobs):
    jobs.statuses["google_dm"] = ["DEFERRED_WITHOUT_RESUME_AT", "SUCCEEDED"]
    execution = machines.run("destination-google_dm", "no-resume-at", {**RUN, "prepared": True}, timeout=60)
    assert execution.status == "SUCCEEDED", execution.cause
    assert "WaitAWhile" in execution.states and "WaitForQuota" not in execution.states


def test_under_the_scheduler_a_long_deferral_is_continued_by_the_scheduler_which_waits_for_the_end(machines, jobs):
    jobs.statuses["google_dm"] = ["QUOTA_DEFERRED", "QUOTA_DEFERRED", "SUCCEEDED"]
    execution = machines.run("scheduler", "sched-long", {**RUN, "run_id": "s2"}, timeout=120)
    assert execution.status == "SUCCEEDED", execution.cause
    google = next(d for d in execution.output["destinations"] if d["destination"] == "google_dm")
    assert google["status"] == "SUCCEEDED" and google["result"]["deferrals"] == 2
    names = sorted(e.name for e in machines.executions("destination-google_dm") if e.name.startswith("s2-"))
    assert names == ["s2-google_dm", "s2-google_dm-2"]
    assert jobs.jobs().count("audience-relay-prepare") == 1


def _poll_like_lambda(machines, queue_url: str) -> list[dict]:
    """What the SQS event source mapping does: receive, invoke, delete all but the reported failures."""
    sqs, responses = machines.aws.client("sqs"), []
    while True:
        received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0).get("Messages", [])
        if not received:
            return responses
        records = [{"messageId": m["MessageId"], "body": m["Body"], "receiptHandle": m["ReceiptHandle"]} for m in received]
        response = start_runs(records, machines.arns["scheduler"], "s3://lake/consent/", machines.aws.client("stepfunctions"))
        responses.append(response)
        retry = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        for record in records:
            if record["messageId"] not in retry:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=record["receiptHandle"])
        if retry:
            return responses


def test_a_completed_input_folder_starts_one_run_and_a_redelivered_event_starts_nothing(machines, jobs, caplog):
    caplog.set_level("INFO", logger="audience_relay.ingest")
    s3, sqs = machines.aws.client("s3"), machines.aws.client("sqs")
    s3.create_bucket(Bucket="lake")
    dead = sqs.create_queue(QueueName="audience-relay-ingest-dlq")["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(QueueName="audience-relay-ingest", Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": "5"})})["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket="lake", NotificationConfiguration=notification_configuration(queue_arn, "in/"))
    # Part files never start a run (a partial input would look like mass removals); the marker does.
    for key in ("in/day 7/part-0.parquet", "in/day 7/part-1.parquet", "in/day 7/_SUCCESS", "archive/day 6/_SUCCESS"):
        s3.put_object(Bucket="lake", Key=key, Body=b"")
    received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]
    [message] = [m for m in received if "Records" in m["Body"]]  # the other is S3's s3:TestEvent
    sqs.send_message(QueueUrl=queue, MessageBody=message["Body"])  # S3 delivers at least once: the same event again

    _poll_like_lambda(machines, queue)

    logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == "audience_relay.ingest"]
    assert len(logged) == 2 and len({entry["run_id"] for entry in logged}) == 1
    [execution] = [e for e in machines.executions("scheduler") if e.name.startswith("s3-")]
    done = machines.aws.wait(execution.arn, timeout=60)
    assert done.status == "SUCCEEDED", done.cause
    prepare = next(args for name, args in jobs.calls if name == "audience-relay-prepare")
    assert prepare["--input"] == "s3://lake/in/day 7/" and prepare["--run_id"] == execution.name
    assert prepare["--consent"] == "s3://lake/consent/"
    # Once the execution has ended, StartExecution refuses the name: still nothing new starts.
    caplog.clear()
    sqs.send_message(QueueUrl=queue, MessageBody=message["Body"])
    _poll_like_lambda(machines, queue)
    assert [json.loads(r.getMessage())["outcome"] for r in caplog.records if r.name == "audience_relay.ingest"] == ["duplicate"]
    assert len([e for e in machines.executions("scheduler") if e.name.startswith("s3-")]) == 1


def test_an_unreadable_ingest_message_is_reported_for_retry_not_dropped(machines, jobs):
    sqs = machines.aws.client("sqs")
    queue = sqs.create_queue(QueueName="audience-relay-ingest-garbage")["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody="not json")
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}))
    responses = _poll_like_lambda(machines, queue)
    failures = [f for r in responses for f in r["batchItemFailures"]]
    assert len(failures) == 1
    left = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    assert [m["Body"] for m in left] == ["not json"]  # still there for SQS to retry, then dead-letter


def test_a_scheduled_start_names_its_run_after_the_scheduled_time_and_reads_that_days_folder(machines, jobs):
    scheduled = {"scheduled_time": "2026-12-01T06:00:00Z", "input": "s3://lake/segments/dt={date}/", "consent": RUN["consent"]}
    execution = machines.run("scheduler", "schedule-tick", scheduled, timeout=120)
    assert execution.status == "SUCCEEDED", execution.cause
    assert execution.output["run_id"] == "daily-202612010600"
    prepare_args = jobs.calls[0][1]
    assert prepare_args["--run_id"] == "daily-202612010600" and prepare_args["--input"] == "s3://lake/segments/dt=2026-12-01/"
    assert "daily-202612010600-google_dm" in {e.name for e in machines.executions("destination-google_dm")}


def test_a_run_that_delivered_everywhere_starts_its_feedback_and_one_already_started_is_no_failure():
    """The scheduler starts the feedback machine (not waited for: it waits hours for the counts); a
    feedback execution of the run that exists already (started before) leaves the run SUCCEEDED."""
    arn = RESOURCES.destination_machine_arn_prefix.replace("destination-", "feedback")
    resources = dataclasses.replace(RESOURCES, feedback_machine_arn=arn)
    with LocalStateMachines([GOOGLE], resources, retry_scale=0.0) as local:
        local.bind(ScriptedJobs(local.aws.client("s3")))
        first = local.run("scheduler", "fb-1", {**RUN, "run_id": "fb"}, timeout=60)
        local.start("feedback", "again", {"run_id": "again", "wait_seconds": 3600})   # as if an earlier start made it
        again = local.run("scheduler", "fb-2", {**RUN, "run_id": "again"}, timeout=60)
        feedback = local.executions("feedback")
    assert first.status == again.status == "SUCCEEDED", (first.cause, again.cause)
    assert "StartFeedback" in first.states and "StartFeedback" in again.states and "RecordFailure" not in again.states
    assert [(e.name, e.status) for e in feedback] == [("again", "RUNNING"), ("fb", "RUNNING")]   # waiting for the counts
