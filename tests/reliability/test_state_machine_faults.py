"""Every Catch and every Retry of the rendered state machines, executed in moto's ASL interpreter.

The cases are not listed by hand: they are enumerated from the definitions `machines()` renders
(states nested in a Map's ItemProcessor or a Parallel's Branches included) for the three kinds of
machine we deploy: a destination prepared by Glue, one prepared on EMR with a transform job, and
the scheduler. The registered destinations' machine has the Glue machine's states (only Init
differs) and runs here under the scheduler, for a destination without a machine of its own. `CATCHES` and `RETRIES` say how each one is made to fail: a Catch or Retry added to
the definitions without an entry there fails its own case, and
`test_every_catch_and_retry_of_the_definitions_has_a_case` fails on entries they no longer have.

A Catch case causes the failure the way it happens (a job that fails, a lease someone else holds,
a summary that is not there, a topic or a queue that is gone, a continuation name that is taken)
and checks where the execution went: the Catch's Next state entered, as many attempts as the
state's Retry allows for that error, the lease released (or left to whoever took it over), one SNS
alert and one SQS dead letter naming the phase and the error, and the error the execution fails
with (`<Phase>Failed`, docs/orchestration.md). A Retry case makes the state's own call fail with
an error its retrier matches MaxAttempts + 1 times (the Catch is taken) and MaxAttempts times (the
last attempt succeeds), and counts the attempts in the execution history and, for jobs and EMR
calls, in the fakes. The jobs are `ScriptedJobs` (tests/integration/test_state_machines.py) with
failures counted down; back-off sleeps are recorded, not slept (retry scale 0).
"""
from __future__ import annotations

import datetime
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import pytest
from botocore.exceptions import ClientError
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import StateTaskServiceAwsSdk
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_dynamodb import StateTaskServiceDynamoDB

from audience_relay.orchestration.definitions import machines
from audience_relay.orchestration.local.engine import JobFailed, LocalClusters
from audience_relay.orchestration.local.runner import ALERT_TAP_QUEUE, LocalStateMachines
from audience_relay.orchestration.local.stack import Execution
from audience_relay.orchestration.machines.specs import REGISTERED_MACHINE, MachineSpec
from tests.integration.test_state_machines import GOOGLE, RESOURCES, RUN, SFTP_ON_EMR, ScriptedJobs

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

SPECS = [GOOGLE, SFTP_ON_EMR]
# Registered after the deploy: the scheduler fans out to it, but its machine is not deployed, so
# it runs on the registered destinations' machine (whose states are the glue machine's).
NEWCOMER = MachineSpec("newcomer", "http_api", "meta_custom_audiences", "newcomer_quota")
MACHINES = {"glue": f"destination-{GOOGLE.id}", "emr": f"destination-{SFTP_ON_EMR.id}", "scheduler": "scheduler"}
DEFINITIONS = machines([*SPECS, NEWCOMER], RESOURCES)
QUOTA_KEYS = {spec.id: spec.quota_key for spec in [*SPECS, NEWCOMER]}
OTHER_JOB = "arn:aws:states:us-east-1:123456789012:execution:audience-relay-destination-other:holder"
TAKEN_OVER_BY = "arn:aws:states:us-east-1:123456789012:execution:audience-relay-destination-other:took-over"
CONDITION_FAILED = "DynamoDB.ConditionalCheckFailedException"
THROTTLED = "ProvisionedThroughputExceededException"
DELIVER, PREPARE = RESOURCES.deliver_job, RESOURCES.prepare_job


# --- the cases, from the definitions ------------------------------------------------------------

def walk(states: dict, prefix: str = ""):
    """(path, state) for every state; a nested state's path is `Outer/Inner`."""
    for name, state in states.items():
        path = prefix + name
        yield path, state
        for inner in [state.get("ItemProcessor") or state.get("Iterator"), *state.get("Branches", [])]:
            if inner:
                yield from walk(inner["States"], path + "/")


CATCH_PAIRS = {(kind, path, ",".join(catch["ErrorEquals"])): (state, catch)
               for kind, machine in MACHINES.items() for path, state in walk(DEFINITIONS[machine]["States"])
               for catch in state.get("Catch", [])}
RETRY_ENTRIES = {(kind, path, index): (state, retrier)
                 for kind, machine in MACHINES.items() for path, state in walk(DEFINITIONS[machine]["States"])
                 for index, retrier in enumerate(state.get("Retry", []))}


def attempts_allowed(state: dict, error: str) -> int:
    """1 + MaxAttempts of the first retrier matching `error` (States.TaskFailed matches every non-States error)."""
    for retrier in state.get("Retry", []):
        names = retrier["ErrorEquals"]
        if error in names or "States.ALL" in names or ("States.TaskFailed" in names and not error.startswith("States.")):
            return 1 + retrier.get("MaxAttempts", 3)
    return 1


def leaf(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def slug(*parts) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", "-".join(str(p) for p in parts))


# --- the fakes -----------------------------------------------------------------------------------

def put_lease(dynamodb, quota_key: str, owner: str) -> None:
    """`owner` holds the quota's lease for the next hour (another job, or one that took it over)."""
    dynamodb.put_item(TableName=RESOURCES.state_table, Item={
        "pk": {"S": f"LEASE#{quota_key}"}, "sk": {"S": "LEASE"}, "owner": {"S": owner},
        "expires_at": {"N": str(int(datetime.datetime.now().timestamp()) + 3600)}, "fencing_token": {"N": "99"}})


class CountdownJobs(ScriptedJobs):
    """`ScriptedJobs` whose jobs fail a number of times before they succeed; deliver can lose its
    lease to a takeover while it runs, or end without writing its summary."""

    def __init__(self, s3, dynamodb) -> None:
        super().__init__(s3, failing=set())
        self.dynamodb = dynamodb
        self.failures_left: Counter[str] = Counter()   # job name, or "emr-step"
        self.lease_taken_over = False
        self.writes_summary = True

    def _fails(self, job: str) -> bool:
        if self.failures_left[job] > 0:
            self.failures_left[job] -= 1
            return True
        return False

    def run_glue_job(self, job_name: str, arguments: dict[str, str]) -> None:
        if job_name == DELIVER and self.lease_taken_over:
            put_lease(self.dynamodb, QUOTA_KEYS[arguments["--destination"]], TAKEN_OVER_BY)
        if self._fails(job_name):
            self.calls.append((job_name, arguments))
            raise JobFailed(f"{job_name} failed (scripted; {self.failures_left[job_name]} more failures)")
        if job_name == DELIVER and not self.writes_summary:
            self.calls.append((job_name, arguments))
            return
        super().run_glue_job(job_name, arguments)

    def run_emr_step(self, cluster_id: str, args: list[str]) -> None:
        if self._fails("emr-step"):
            self.calls.append(("emr-step", {"cluster": cluster_id, "args": args}))
            raise JobFailed("spark-submit exited with 1 (scripted)")
        super().run_emr_step(cluster_id, args)


@dataclass
class FlakyClusters(LocalClusters):
    """EMR that cannot start a cluster (capacity) or whose TerminateJobFlows is throttled, a number of times."""

    create_refusals: int = 0
    terminate_refusals: int = 0
    terminate_calls: int = 0

    def create(self, request: dict) -> str:
        if self.create_refusals > 0:
            self.create_refusals -= 1
            raise JobFailed("cluster TERMINATED_WITH_ERRORS: insufficient capacity (scripted)")
        return super().create(request)

    def terminate(self, cluster_id: str) -> None:
        self.terminate_calls += 1
        if self.terminate_refusals > 0:
            self.terminate_refusals -= 1
            raise JobFailed("TerminateJobFlows: ThrottlingException (scripted)")
        super().terminate(cluster_id)


class ServiceFaults:
    """Fails a named state's DynamoDB or S3 call with an AWS error code a number of times, before the
    real call; the interpreter turns it into the error AWS would report (`DynamoDB.<Code>`, ...)."""

    def __init__(self) -> None:
        self.left: dict[str, tuple[str, int]] = {}

    def inject(self, state: str, code: str, times: int) -> None:
        self.left[state] = (code, times)

    def install(self, monkeypatch) -> None:
        for service in (StateTaskServiceDynamoDB, StateTaskServiceAwsSdk):
            monkeypatch.setattr(service, "_eval_service_task", self._failing(service._eval_service_task))

    def _failing(self, real):
        def eval_service_task(task, env, *args, **kwargs):
            state = env.states.context_object.context_object_data["State"]["Name"]
            code, times = self.left.get(state, ("", 0))
            if times:
                self.left[state] = (code, times - 1)
                raise ClientError({"Error": {"Code": code, "Message": f"{code} (injected)"},
                                   "ResponseMetadata": {"HTTPStatusCode": 400, "RequestId": "injected"}}, task.resource.api_action)
            return real(task, env, *args, **kwargs)
        return eval_service_task


class World:
    """One case's view of the local machines: its fakes, its run and what it sent."""

    def __init__(self, local: LocalStateMachines, jobs: CountdownJobs, faults: ServiceFaults) -> None:
        self.local, self.jobs, self.faults = local, jobs, faults
        self.kind = self.run_id = ""
        self.undo: list[Callable[[], None]] = []

    def use(self, kind: str, run_id: str) -> None:
        self.kind, self.run_id = kind, run_id

    @property
    def destination(self) -> str:
        return MACHINES[self.kind].removeprefix("destination-")

    @property
    def quota_key(self) -> str:
        return QUOTA_KEYS[self.destination]

    @property
    def clusters(self) -> FlakyClusters:
        if not isinstance(self.local.binding.clusters, FlakyClusters):
            self.local.binding.clusters = FlakyClusters()
        return self.local.binding.clusters

    def run(self, make_input: Callable[[dict], Any], name: str | None = None) -> Execution:
        payload = make_input({**RUN, "run_id": name or self.run_id})
        return self.local.run(MACHINES[self.kind], name or self.run_id, payload, timeout=60)

    def attempts(self, execution: Execution, state: str) -> int:
        """Attempts the interpreter made on the state's last entry: its TaskScheduled events."""
        sfn, entries, token = self.local.aws.client("stepfunctions"), [], None
        while True:
            page = sfn.get_execution_history(executionArn=execution.arn, maxResults=1000, **({"nextToken": token} if token else {}))
            for event in page["events"]:
                if event["type"] == "TaskStateEntered":
                    entries.append([event["stateEnteredEventDetails"]["name"], 0])
                elif event["type"] == "TaskScheduled":
                    entries[-1][1] += 1
            token = page.get("nextToken")
            if not token:
                return [count for name, count in entries if name == state][-1]

    def alerts(self, execution: Execution) -> list[dict]:
        return [a["message"] for a in self.local.alerts() if a["message"]["execution"] == execution.arn]

    def dead_letters(self, execution: Execution) -> list[dict]:
        return [letter for letter in self.local.dead_letters() if letter["execution"] == execution.arn]

    def lease(self) -> dict:
        return self.local.lease(self.quota_key)

    def without_alert_topic(self) -> None:
        sns, arn = self.local.aws.client("sns"), RESOURCES.alert_topic_arn
        sns.delete_topic(TopicArn=arn)

        def restore() -> None:
            sns.create_topic(Name=arn.rsplit(":", 1)[1])
            sqs = self.local.aws.client("sqs")
            tap = sqs.get_queue_attributes(QueueUrl=self.local.aws.queue_url(ALERT_TAP_QUEUE), AttributeNames=["QueueArn"])
            sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=tap["Attributes"]["QueueArn"])
        self.undo.append(restore)

    def without_dead_letter_queue(self) -> None:
        sqs, name = self.local.aws.client("sqs"), RESOURCES.dead_letter_queue_url.rsplit("/", 1)[1]
        sqs.delete_queue(QueueUrl=self.local.aws.queue_url(name))
        self.undo.append(lambda: sqs.create_queue(QueueName=name))


@pytest.fixture(scope="module")
def local():
    with LocalStateMachines([*SPECS, NEWCOMER], RESOURCES, retry_scale=0.0) as machines_:
        machines_.aws.client("stepfunctions").delete_state_machine(stateMachineArn=machines_.arns.pop(f"destination-{NEWCOMER.id}"))
        yield machines_


@pytest.fixture
def world(local, monkeypatch):
    jobs = CountdownJobs(local.aws.client("s3"), local.aws.client("dynamodb"))
    local.bind(jobs)
    local.alerts(), local.dead_letters()   # each case sees only its own
    faults = ServiceFaults()
    faults.install(monkeypatch)
    case = World(local, jobs, faults)
    yield case
    for undo in reversed(case.undo):
        undo()
    for quota_key in QUOTA_KEYS.values():
        local.aws.client("dynamodb").delete_item(TableName=RESOURCES.state_table,
                                                 Key={"pk": {"S": f"LEASE#{quota_key}"}, "sk": {"S": "LEASE"}})


# --- how each Catch is reached -------------------------------------------------------------------

def fresh(run: dict) -> dict:
    """A run the machine prepares itself."""
    return run


def prepared(run: dict) -> dict:
    """A run the scheduler prepared: the machine starts at the lease (keeps the case short)."""
    return {**run, "prepared": True}


def _always(job: str) -> Callable[[World], None]:
    def arrange(world: World) -> None:
        world.jobs.failures_left[job] = 99
    return arrange


def _destination_job_fails(job: str, destination_id: str) -> Callable[[World], None]:
    def arrange(world: World) -> None:
        world.jobs.failing = {f"{job}:{destination_id}"}   # ScriptedJobs: that destination's run of the job fails
    return arrange


def _another_job_holds_the_lease(world: World) -> None:
    put_lease(world.local.aws.client("dynamodb"), world.quota_key, OTHER_JOB)


def _no_summary(world: World) -> None:
    world.jobs.writes_summary = False


def _taken_over(*statuses: str) -> Callable[[World], None]:
    def arrange(world: World) -> None:
        world.jobs.lease_taken_over = True
        world.jobs.statuses[world.destination] = list(statuses)
    return arrange


def _continuation_name_taken(world: World) -> None:
    """An execution already has the name the continuation gets (`<run_id>-<destination>-<deferrals>`)."""
    taken = f"{world.run_id}-{world.destination}-{RESOURCES.continue_every}"
    assert world.run(prepared, name=taken).status == "SUCCEEDED"
    world.jobs.statuses[world.destination] = ["QUOTA_DEFERRED"]


def _summary_failed_and(step: Callable[[World], None]) -> Callable[[World], None]:
    def arrange(world: World) -> None:
        world.jobs.statuses[world.destination] = ["FAILED"]
        step(world)
    return arrange


def _cluster_cannot_start(world: World) -> None:
    world.clusters.create_refusals = 1


def _cluster_cannot_be_terminated(world: World) -> None:
    world.clusters.terminate_refusals = 99


def _step_fails_and_cluster_cannot_be_terminated(world: World) -> None:
    world.jobs.failures_left["emr-step"] = 99
    world.clusters.terminate_refusals = 99


def _prepare_fails_and(step: Callable[[World], None]) -> Callable[[World], None]:
    def arrange(world: World) -> None:
        world.jobs.failures_left[PREPARE] = 99
        step(world)
    return arrange


def _nothing_delivered(world: World, execution: Execution) -> None:
    assert DELIVER not in world.jobs.jobs()


def _delivered_once(world: World, execution: Execution) -> None:
    assert world.jobs.jobs().count(DELIVER) == 1   # the job answered (exit 0): it is not run again


def _clusters_left(*states: str, step: bool = True) -> Callable[[World, Execution], None]:
    def check(world: World, execution: Execution) -> None:
        assert [c["State"] for c in world.local.binding.clusters.clusters.values()] == list(states)
        assert ("emr-step" in world.jobs.jobs()) == step and "enrich" not in world.jobs.jobs()
    return check


def _destinations_started(**statuses: str) -> Callable[[World, Execution], None]:
    """Each destination's execution: on its own machine, or (NEWCOMER) on the registered destinations' one."""
    def check(world: World, execution: Execution) -> None:
        started = {spec.id: e for spec in SPECS for e in world.local.executions(f"destination-{spec.id}")
                   if e.name.startswith(world.run_id)}
        started |= {e.output["destination"] if e.output else NEWCOMER.id: e for e in world.local.executions(REGISTERED_MACHINE)
                    if e.name.startswith(world.run_id)}
        assert {d: e.error or e.status for d, e in started.items()} == statuses
    return check


def _started_before(destination_id: str) -> Callable[[World], None]:
    """The destination's execution of this run exists (an earlier start of the run made it)."""
    def arrange(world: World) -> None:
        machine = REGISTERED_MACHINE if destination_id == NEWCOMER.id else f"destination-{destination_id}"
        payload = {**RUN, "run_id": world.run_id, "prepared": True, "destination": destination_id}
        assert world.local.run(machine, f"{world.run_id}-{destination_id}", payload, timeout=60).status == "SUCCEEDED"
        world.jobs.failing = {f"{DELIVER}:{SFTP_ON_EMR.id}"}
    return arrange


def _duplicate_of(destination_id: str) -> Callable[[World], None]:
    def check(world: World, execution: Execution) -> None:
        machine = REGISTERED_MACHINE if destination_id == NEWCOMER.id else f"destination-{destination_id}"
        assert [e.name for e in world.local.executions(machine) if e.name.startswith(world.run_id)] == [f"{world.run_id}-{destination_id}"]
        delivered = [args["--destination"] for job, args in world.jobs.calls if job == DELIVER]
        assert delivered.count(destination_id) == 1   # by the earlier execution only
    return check


@dataclass(frozen=True)
class Fault:
    how: str
    arrange: Callable[[World], None]
    raised: str                                   # the error the state fails with
    fails_as: str                                 # the execution's error; its phase is in the alert and the letter
    reported: str = ""                            # the error the dead letter carries, when not `raised`
    start: Callable[[dict], Any] = prepared
    lease_owner: str | None = None                # who holds the lease at the end (None: nobody)
    alert: bool = True
    dead_letter: bool = True
    check: Callable[[World, Execution], None] | None = None   # what else the case must have left behind


DESTINATION_CATCHES = {
    "AcquireLease": Fault("another job holds the shared quota's lease, live, on every attempt", _another_job_holds_the_lease,
                          CONDITION_FAILED, "LeaseFailed", lease_owner=OTHER_JOB, check=_nothing_delivered),
    "Deliver": Fault("the deliver job fails on every attempt", _always(DELIVER), "States.TaskFailed", "DeliverFailed"),
    # moto's interpreter names aws-sdk errors after the lower-case service (AWS: `S3.NoSuchKeyException`).
    "ReadSummary": Fault("the deliver job ends without writing its summary", _no_summary, "s3.NoSuchKeyException",
                         "ReadSummaryFailed", check=_delivered_once),
    "ReleaseLease": Fault("the lease is taken over while a delivery succeeds", _taken_over("SUCCEEDED"),
                          CONDITION_FAILED, "ReleaseFailed", lease_owner=TAKEN_OVER_BY),
    "ReleaseBeforeWait": Fault("the lease is taken over while a delivery is deferred", _taken_over("QUOTA_DEFERRED"),
                               CONDITION_FAILED, "ReleaseFailed", lease_owner=TAKEN_OVER_BY),
    "ContinueAsNew": Fault("the continuation's execution name is taken", _continuation_name_taken,
                           "StepFunctions.ExecutionAlreadyExistsException", "ContinueAsNewFailed",
                           start=lambda run: {**run, "prepared": True, "deferrals": RESOURCES.continue_every - 1}),
    "ReleaseAfterFailure": Fault("the lease is taken over while a delivery fails (summary FAILED)", _taken_over("FAILED"),
                                 CONDITION_FAILED, "DeliveryFailed", reported="summary FAILED", lease_owner=TAKEN_OVER_BY,
                                 check=_delivered_once),
    "Alert": Fault("the alert topic is gone; the delivery failed (summary FAILED)", _summary_failed_and(World.without_alert_topic),
                   "SNS.NotFoundException", "DeliveryFailed", reported="summary FAILED", alert=False),
    "DeadLetter": Fault("the dead-letter queue is gone; the delivery failed (summary FAILED)",
                        _summary_failed_and(World.without_dead_letter_queue),
                        "SQS.SdkClientException", "DeliveryFailed", reported="summary FAILED", dead_letter=False),
}
ALL = "States.ALL"
CATCHES: dict[tuple[str, str, str], Fault] = {
    **{(kind, state, ALL): fault for kind in ("glue", "emr") for state, fault in DESTINATION_CATCHES.items()},
    ("glue", "Prepare", ALL): Fault("the prepare job fails on every attempt", _always(PREPARE), "States.TaskFailed",
                                    "PrepareFailed", start=fresh),
    ("emr", "CreateCluster", ALL): Fault("EMR cannot start the cluster", _cluster_cannot_start, "States.TaskFailed",
                                         "PrepareFailed", start=fresh, check=_clusters_left(step=False)),
    ("emr", "Prepare", ALL): Fault("the prepare step fails", _always("emr-step"), "States.TaskFailed", "PrepareFailed",
                                   start=fresh, check=_clusters_left("TERMINATED")),
    ("emr", "TerminateCluster", ALL): Fault("the cluster cannot be terminated after the step", _cluster_cannot_be_terminated,
                                            "States.TaskFailed", "TerminateClusterFailed", start=fresh,
                                            check=_clusters_left("WAITING")),   # left to its idle auto-termination
    ("emr", "TerminateClusterAfterFailure", ALL): Fault("the step fails and the cluster cannot be terminated",
                                                        _step_fails_and_cluster_cannot_be_terminated, "States.TaskFailed",
                                                        "PrepareFailed", start=fresh, check=_clusters_left("WAITING")),
    ("emr", "Transform", ALL): Fault("the transform job fails on every attempt", _always("enrich"), "States.TaskFailed",
                                     "TransformFailed", start=fresh, check=_nothing_delivered),
    ("scheduler", "Prepare", ALL): Fault("the prepare job fails on every attempt", _always(PREPARE), "States.TaskFailed",
                                         "PrepareFailed", start=fresh, check=_destinations_started()),
    # Only an ItemSelector that cannot be evaluated fails the Map itself: RunDestination catches every child failure.
    # moto reports a JSONata error as States.Runtime; AWS as States.QueryEvaluationError, which States.ALL catches too.
    ("scheduler", "Destinations", ALL): Fault("a run input prepare accepts but the fan-out cannot merge (a list)",
                                              lambda world: None, "States.Runtime", "DestinationsFailed",
                                              start=lambda run: [run, "not a run"], check=_destinations_started()),
    ("scheduler", "Destinations/RunDestination", ALL): Fault(
        f"{GOOGLE.id}'s deliver job fails on every attempt", _destination_job_fails(DELIVER, GOOGLE.id), "States.TaskFailed",
        "DestinationsFailed", reported=f"destinations {GOOGLE.id}", start=fresh,
        check=_destinations_started(**{GOOGLE.id: "DeliverFailed", SFTP_ON_EMR.id: "SUCCEEDED", NEWCOMER.id: "SUCCEEDED"})),
    # A repeated start of the run: a destination's execution of it exists already (it delivers, or
    # did): reported DUPLICATE, not run twice, not a failure; partner_sftp fails so that the case ends failed.
    ("scheduler", "Destinations/RunDestination", "StepFunctions.ExecutionAlreadyExistsException"): Fault(
        f"{GOOGLE.id}'s execution of the run exists already; {SFTP_ON_EMR.id}'s deliver fails", _started_before(GOOGLE.id),
        "StepFunctions.ExecutionAlreadyExistsException", "DestinationsFailed", reported=f"destinations {SFTP_ON_EMR.id}",
        start=fresh, check=_duplicate_of(GOOGLE.id)),
    ("scheduler", "Destinations/RunRegistered", "StepFunctions.ExecutionAlreadyExistsException"): Fault(
        f"{NEWCOMER.id}'s execution of the run exists already; {SFTP_ON_EMR.id}'s deliver fails", _started_before(NEWCOMER.id),
        "StepFunctions.ExecutionAlreadyExistsException", "DestinationsFailed", reported=f"destinations {SFTP_ON_EMR.id}",
        start=fresh, check=_duplicate_of(NEWCOMER.id)),
    # The fallback to the registered destinations' machine, then that execution failing.
    **{("scheduler", path, errors): Fault(
        f"{NEWCOMER.id} has no machine of its own, and its deliver job fails on every attempt", _destination_job_fails(DELIVER, NEWCOMER.id),
        "States.TaskFailed", "DestinationsFailed", reported=f"destinations {NEWCOMER.id}", start=fresh,
        check=_destinations_started(**{GOOGLE.id: "SUCCEEDED", SFTP_ON_EMR.id: "SUCCEEDED", NEWCOMER.id: "DeliverFailed"}))
       for path, errors in (("Destinations/RunDestination", "StepFunctions.StateMachineDoesNotExistException"),
                            ("Destinations/RunRegistered", ALL))},
    ("scheduler", "Alert", ALL): Fault("the alert topic is gone; prepare failed", _prepare_fails_and(World.without_alert_topic),
                                       "SNS.NotFoundException", "PrepareFailed", reported="States.TaskFailed", start=fresh,
                                       alert=False),
    ("scheduler", "DeadLetter", ALL): Fault("the dead-letter queue is gone; prepare failed",
                                            _prepare_fails_and(World.without_dead_letter_queue), "SQS.SdkClientException",
                                            "PrepareFailed", reported="States.TaskFailed", start=fresh, dead_letter=False),
}


def reported_error(failure) -> str:
    """What a dead letter says failed: an error name, a summary's status, or the failed destinations."""
    if isinstance(failure, list):  # the scheduler's failed destinations, a list even for one
        return "destinations " + ",".join(result["destination"] for result in failure)
    if "Error" in failure:
        return failure["Error"]
    return f"summary {failure['status']}"


def entered_after(states: list[str], state: str, following: str, nested: bool) -> bool:
    """`following` was entered right after `state` (anywhere after it for states inside a Map iteration)."""
    if nested:
        return state in states and following in states[states.index(state) + 1:]
    return any(a == state and b == following for a, b in zip(states, states[1:]))


@pytest.mark.parametrize("key", sorted(CATCH_PAIRS), ids=lambda key: slug(*key))
def test_catch(key, world):
    kind, path, errors = key
    if key not in CATCHES:
        pytest.fail(f"no way to cause the Catch {key}: add it to CATCHES")
    fault, (state, catch) = CATCHES[key], CATCH_PAIRS[key]
    phase = fault.fails_as.removesuffix("Failed")
    if "Assign" in catch:
        assert catch["Assign"]["failed_phase"] == phase
    world.use(kind, slug("c", kind, path, *([] if errors == ALL else [errors.rsplit(".", 1)[-1][:20]])))
    fault.arrange(world)

    execution = world.run(fault.start)

    assert execution.status == "FAILED" and execution.error == fault.fails_as, f"{fault.how}: {execution.cause}"
    assert entered_after(execution.states, leaf(path), catch["Next"], nested="/" in path), execution.states
    assert execution.states[-1] == "Failed" and "RecordFailure" in execution.states
    if state["Type"] == "Task" and "/" not in path:
        assert world.attempts(execution, leaf(path)) == attempts_allowed(state, fault.raised)
    alerts = world.alerts(execution)
    letters = world.dead_letters(execution) if fault.dead_letter else []   # no queue to read
    assert [a["phase"] for a in alerts] == ([phase] if fault.alert else [])
    assert [letter["phase"] for letter in letters] == ([phase] if fault.dead_letter else [])
    for letter in letters:
        assert reported_error(letter["error"]) == (fault.reported or fault.raised)
        assert letter["run_id"] == world.run_id
    if fault.check:
        fault.check(world, execution)
    if kind == "scheduler":
        assert all("owner" not in world.local.lease(q) for q in QUOTA_KEYS.values())
    else:
        assert world.lease().get("owner") == fault.lease_owner
        if fault.lease_owner is None and "AcquireLease" in execution.states:
            assert world.lease()["expires_at"] == "0"   # held, then released


# --- how each Retry is run out, and run until its last attempt succeeds --------------------------

@dataclass(frozen=True)
class Flaky:
    how: str
    arrange: Callable[[World, int], None]          # makes the state's call fail that many times
    runs: Callable[[World], int] | None = None     # the calls the fake saw (a job's runs), when it can count them
    start: Callable[[dict], Any] = prepared
    ends_as: str | None = None                     # the execution's error when the last attempt succeeds (None: SUCCEEDED)
    keeps_lease: bool = False                      # exhausted, the lease stays ours until it expires


def _job_fails(job: str) -> Callable[[World, int], None]:
    def arrange(world: World, times: int) -> None:
        world.jobs.failures_left[job] = times
    return arrange


def _job_runs(job: str) -> Callable[[World], int]:
    return lambda world: world.jobs.jobs().count(job)


def _service_fails(state: str, code: str, statuses: list[str] | None = None) -> Callable[[World, int], None]:
    def arrange(world: World, times: int) -> None:
        world.faults.inject(state, code, times)
        if statuses and world.kind != "scheduler":
            world.jobs.statuses[world.destination] = list(statuses)
    return arrange


def _terminate_calls(world: World) -> int:
    return world.clusters.terminate_calls


def _terminate_refused(step_fails: bool) -> Callable[[World, int], None]:
    def arrange(world: World, times: int) -> None:
        world.clusters.terminate_refusals = times
        if step_fails:
            world.jobs.failures_left["emr-step"] = 99
    return arrange


DESTINATION_RETRIES = {
    ("AcquireLease", 0): Flaky("UpdateItem's condition fails (the lease is held)",
                               _service_fails("AcquireLease", "ConditionalCheckFailedException")),
    ("AcquireLease", 1): Flaky("UpdateItem is throttled", _service_fails("AcquireLease", THROTTLED)),
    ("ReadSummary", 0): Flaky("GetObject fails with an internal error", _service_fails("ReadSummary", "InternalError")),
    ("ReleaseLease", 0): Flaky("UpdateItem is throttled", _service_fails("ReleaseLease", THROTTLED)),
    ("ReleaseBeforeWait", 0): Flaky("UpdateItem is throttled while deferred",
                                    _service_fails("ReleaseBeforeWait", THROTTLED, ["QUOTA_DEFERRED", "SUCCEEDED"])),
    ("ReleaseAfterFailure", 0): Flaky("UpdateItem is throttled after a delivery failed (summary FAILED)",
                                      _service_fails("ReleaseAfterFailure", THROTTLED, ["FAILED"]), ends_as="DeliveryFailed",
                                      keeps_lease=True),
}
RETRIES: dict[tuple[str, str, int], Flaky] = {
    **{(kind, state, index): flaky for kind in ("glue", "emr") for (state, index), flaky in DESTINATION_RETRIES.items()},
    ("glue", "Prepare", 0): Flaky("the prepare job fails", _job_fails(PREPARE), _job_runs(PREPARE), start=fresh),
    ("emr", "TerminateCluster", 0): Flaky("TerminateJobFlows is throttled", _terminate_refused(step_fails=False),
                                          _terminate_calls, start=fresh),
    ("emr", "TerminateClusterAfterFailure", 0): Flaky("the step fails, then TerminateJobFlows is throttled",
                                                      _terminate_refused(step_fails=True), _terminate_calls,
                                                      start=fresh, ends_as="PrepareFailed"),
    ("emr", "Transform", 0): Flaky("the transform job fails", _job_fails("enrich"), _job_runs("enrich"), start=fresh),
    ("scheduler", "Prepare", 0): Flaky("the prepare job fails", _job_fails(PREPARE), _job_runs(PREPARE), start=fresh),
}


@pytest.mark.parametrize("mode", ["exhausted", "recovers"])
@pytest.mark.parametrize("key", sorted(RETRY_ENTRIES), ids=lambda key: slug(*key))
def test_retry(key, mode, world):
    kind, path, _ = key
    if key not in RETRIES:
        pytest.fail(f"no way to fail the state of the Retry {key}: add it to RETRIES")
    flaky, (state, retrier) = RETRIES[key], RETRY_ENTRIES[key]
    allowed = retrier.get("MaxAttempts", 3)
    world.use(kind, slug("r", kind, path, key[2], mode))
    flaky.arrange(world, allowed + 1 if mode == "exhausted" else allowed)

    execution = world.run(flaky.start)

    assert world.attempts(execution, leaf(path)) == allowed + 1, f"{flaky.how}: {execution.states}"
    if flaky.runs:
        assert flaky.runs(world) == allowed + 1
    sleeps = world.local.binding.retry_sleeps
    assert len(sleeps) == allowed and max(sleeps) <= retrier.get("MaxDelaySeconds", float("inf"))
    if mode == "exhausted":
        [catch] = state["Catch"]
        assert entered_after(execution.states, leaf(path), catch["Next"], nested=False), execution.states
        phase = catch.get("Assign", {}).get("failed_phase")
        assert execution.error == (f"{phase}Failed" if phase else flaky.ends_as)
    else:
        assert entered_after(execution.states, leaf(path), state["Next"], nested=False), execution.states
        assert execution.error == flaky.ends_as, execution.cause
    if kind != "scheduler":
        kept = mode == "exhausted" and flaky.keeps_lease
        assert world.lease().get("owner") == (execution.arn if kept else None)


# --- the limits that are not Retry entries -------------------------------------------------------

@pytest.mark.parametrize("status", ["QUOTA_DEFERRED", "FENCED"])
def test_a_delivery_that_never_completes_fails_as_DeferralLimitFailed_after_max_deferrals(world, status):
    """Deferred (waits, continues as new every `continue_every`) or fenced out (takes the lease again) every time."""
    world.use("glue", slug("limit", status))
    world.jobs.statuses[GOOGLE.id] = [status]
    execution = world.run(prepared)
    while execution.output and execution.output.get("status") == "CONTINUED_AS_NEW":
        execution = world.local.aws.wait(execution.output["execution"], timeout=60)
    assert execution.status == "FAILED" and execution.error == "DeferralLimitFailed", execution.cause
    assert world.jobs.jobs().count(DELIVER) == RESOURCES.max_deferrals + 1
    [letter] = world.dead_letters(execution)
    assert letter["phase"] == "DeferralLimit" and letter["deferrals"] == RESOURCES.max_deferrals
    assert "owner" not in world.lease()


def test_batches_failing_at_the_deferral_limit_fail_as_DeliveryFailed_not_as_the_limit(world):
    """A FAILED summary that was not fenced out is a delivery failure whatever the deferral count."""
    world.use("glue", "failed-at-limit")
    world.jobs.statuses[GOOGLE.id] = ["FAILED"]
    execution = world.run(lambda run: {**run, "prepared": True, "deferrals": RESOURCES.max_deferrals})
    assert execution.error == "DeliveryFailed"
    assert [letter["phase"] for letter in world.dead_letters(execution)] == ["Delivery"]


def test_a_throttled_release_after_a_failure_still_releases_the_lease(world):
    """docs/orchestration.md: after any failure the lease is released if still ours; one throttled call must not lock the quota until expiry."""
    world.use("glue", "release-throttled")
    world.jobs.statuses[GOOGLE.id] = ["FAILED"]
    world.faults.inject("ReleaseAfterFailure", THROTTLED, 1)
    execution = world.run(prepared)
    assert execution.error == "DeliveryFailed"
    assert "owner" not in world.lease()


def test_every_catch_and_retry_of_the_definitions_has_a_case():
    assert ("scheduler", "Destinations/RunDestination", ALL) in CATCH_PAIRS   # nested states are walked
    assert set(CATCHES) == set(CATCH_PAIRS), "CATCHES must name exactly the Catch entries of the definitions"
    assert set(RETRIES) == set(RETRY_ENTRIES), "RETRIES must name exactly the Retry entries of the definitions"
