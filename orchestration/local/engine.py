"""Make moto's Step Functions engine (moto 5.2.5) run our definitions, with local compute.

moto ships LocalStack's ASL interpreter; six gaps stop it from running a JSONata definition
end to end (orchestration/docs/local-runner-findings.md has each one with the error it
gives). `install()` closes them, and shortens one wait (7):

1. JSONata: moto leaves the evaluator unset (`_eval_jsonata = None`); jsonata-python fills it.
2. `glue:startJobRun.sync` and `elasticmapreduce:*` (unsupported in moto) are bound to a
   `LocalCompute`: the same job scripts, run by local Spark.
3. `aws-sdk:s3:getObject` returns a stream object instead of the body text.
4. `states:startExecution` sends SFN-cased parameters to a camelCase API.
5. Retry back-off sleeps are real sleeps; they are scaled by `retry_scale`.
6. `lambda:invoke` needs Docker in moto: the compute's `invoke_function` answers it in this process.
7. A `.sync` task looks at its child (a destination machine's execution) every 0.5 s: every
   0.05 s here. The look is an in-process call; the scheduler goes on as soon as a child ends.

Patches are process-wide and installed once; `install()` may be called again to swap the
compute or the scale.
"""
from __future__ import annotations

import datetime
import itertools
import json
import logging
import threading
import time
import types
from dataclasses import dataclass, field
from typing import Any, Protocol

import botocore.session
import jsonata
from botocore.response import StreamingBody
from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEvent, FailureEventException
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import StatesErrorNameType
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils, state_task_factory
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_factory
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.resource import ResourceCondition
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import StateTaskServiceAwsSdk
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_callback
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_callback import StateTaskServiceCallback
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_lambda import StateTaskServiceLambda
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import StateTaskServiceSfn
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
from moto.stepfunctions.parser.asl.jsonata import jsonata as moto_jsonata
from moto.stepfunctions.parser.asl.utils.encoding import to_json_str


class JobFailed(Exception):
    """A local job run ended badly; the message becomes the task's failure cause."""


class LocalCompute(Protocol):
    """What Glue jobs and EMR steps turn into on a laptop."""

    def run_glue_job(self, job_name: str, arguments: dict[str, str]) -> None:
        """Run the job to completion; raise JobFailed when it fails."""

    def run_emr_step(self, cluster_id: str, args: list[str]) -> None:
        """Run a `command-runner.jar` step (`spark-submit script --k v ...`); raise JobFailed when it fails."""

    def invoke_function(self, name: str, payload: Any) -> Any:
        """Lambda's handler result for the payload; what it raises is the function's error (its type the error name)."""


@dataclass
class LocalClusters:
    """The on-demand EMR clusters an execution created, so tests can see each one terminated.

    `create` and `terminate` raising JobFailed fail the task as AWS would (States.TaskFailed).
    """

    clusters: dict[str, dict] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self, request: dict) -> str:
        with self._lock:
            cluster_id = f"j-LOCAL{next(self._ids):06d}"
            self.clusters[cluster_id] = {"Name": request.get("Name"), "State": "WAITING", "Steps": [], "Request": request}
        return cluster_id

    def get(self, cluster_id: str) -> dict:
        if cluster_id not in self.clusters:
            raise JobFailed(f"cluster {cluster_id} does not exist")
        return self.clusters[cluster_id]

    def terminate(self, cluster_id: str) -> None:
        self.get(cluster_id)["State"] = "TERMINATED"


@dataclass
class _Binding:
    compute: LocalCompute | None = None
    clusters: LocalClusters = field(default_factory=LocalClusters)
    retry_scale: float = 1.0
    retry_sleeps: list[float] = field(default_factory=list)


BINDING = _Binding()
_installed = False
_run_ids = itertools.count(1)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def _task_failed(task: StateTaskServiceCallback, env, cause: dict) -> FailureEventException:
    """The failure AWS reports for a .sync job that ended FAILED: States.TaskFailed with the run as cause."""
    return FailureEventException(FailureEvent(
        env=env,
        error_name=StatesErrorName(typ=StatesErrorNameType.StatesTaskFailed),
        event_type=HistoryEventType.TaskFailed,
        event_details=EventDetails(taskFailedEventDetails=TaskFailedEventDetails(
            resource=task._get_sfn_resource(), resourceType=task._get_sfn_resource_type(),
            error=StatesErrorNameType.StatesTaskFailed.to_name(), cause=to_json_str(cause),
        )),
    ))


class _LocalTaskService(StateTaskServiceCallback):
    """A service integration answered locally: `_start` is the API call, `_complete` the .sync wait."""

    PARAMETERS: dict[str, set[str]] = {}

    def __init__(self) -> None:
        super().__init__(supported_integration_patterns={ResourceCondition.Sync})

    def _get_supported_parameters(self) -> set[str] | None:
        return self.PARAMETERS.get(self.resource.api_action.lower())

    def _compute(self) -> LocalCompute:
        if BINDING.compute is None:
            raise RuntimeError("no local compute bound: call orchestration.local.engine.install() first")
        return BINDING.compute

    def _eval_service_task(self, env, resource_runtime_part, normalised_parameters, state_credentials) -> None:
        env.stack.append(self._start(env, self.resource.api_action.lower(), normalised_parameters))

    def _eval_integration_pattern(self, env, resource_runtime_part, normalised_parameters, state_credentials) -> None:
        started = env.stack.pop()
        env.stack.append(self._complete(env, self.resource.api_action.lower(), normalised_parameters, started))

    def _start(self, env, action: str, parameters: dict) -> dict:
        raise NotImplementedError

    def _complete(self, env, action: str, parameters: dict, started: dict) -> dict:
        raise NotImplementedError


class LocalGlue(_LocalTaskService):
    """`glue:startJobRun.sync`: the job runs locally while the task waits, as Glue's would."""

    PARAMETERS = {"startjobrun": {"JobName", "Arguments", "Timeout", "WorkerType", "NumberOfWorkers", "ExecutionClass"}}

    def _start(self, env, action: str, parameters: dict) -> dict:
        return {"JobRunId": f"jr_local_{next(_run_ids):06d}", "JobName": parameters["JobName"]}

    def _complete(self, env, action: str, parameters: dict, started: dict) -> dict:
        run = {"Id": started["JobRunId"], "JobName": started["JobName"], "Arguments": parameters.get("Arguments") or {}, "StartedOn": _now()}
        try:
            self._compute().run_glue_job(started["JobName"], dict(run["Arguments"]))
        except JobFailed as failure:
            raise _task_failed(self, env, {**run, "JobRunState": "FAILED", "ErrorMessage": str(failure), "CompletedOn": _now()}) from None
        return {**run, "JobRunState": "SUCCEEDED", "CompletedOn": _now()}


class LocalEmr(_LocalTaskService):
    """`elasticmapreduce` createCluster / addStep / terminateCluster, with steps run locally."""

    PARAMETERS = {
        "createcluster": {"Name", "ReleaseLabel", "Applications", "Instances", "ServiceRole", "JobFlowRole", "LogUri",
                          "AutoTerminationPolicy", "VisibleToAllUsers", "Tags", "Configurations", "StepConcurrencyLevel",
                          "BootstrapActions", "SecurityConfiguration"},
        "addstep": {"ClusterId", "Step", "ExecutionRoleArn"},
        "terminatecluster": {"ClusterId"},
    }

    def _start(self, env, action: str, parameters: dict) -> dict:
        clusters = BINDING.clusters
        if action == "createcluster":
            try:
                cluster_id = clusters.create(parameters)
            except JobFailed as failure:   # the cluster ended TERMINATED_WITH_ERRORS (capacity, bootstrap...)
                raise _task_failed(self, env, {"Error": str(failure)}) from None
            return {"ClusterId": cluster_id, "ClusterArn": f"arn:aws:elasticmapreduce:local:000000000000:cluster/{cluster_id}"}
        if action == "addstep":
            try:
                cluster = clusters.get(parameters["ClusterId"])
            except JobFailed as failure:
                raise _task_failed(self, env, {"Error": str(failure)}) from None
            step_id = f"s-LOCAL{next(_run_ids):06d}"
            cluster["Steps"].append({"Id": step_id, "Name": parameters["Step"].get("Name"), "State": "PENDING"})
            return {"StepId": step_id}
        if action == "terminatecluster":
            try:
                clusters.terminate(parameters["ClusterId"])
            except JobFailed as failure:
                raise _task_failed(self, env, {"Error": str(failure)}) from None
            return {}
        raise ValueError(f"elasticmapreduce:{action} is not bound locally")

    def _complete(self, env, action: str, parameters: dict, started: dict) -> dict:
        if action != "addstep":
            return started
        cluster = BINDING.clusters.get(parameters["ClusterId"])
        step = next(s for s in cluster["Steps"] if s["Id"] == started["StepId"])
        args = list(parameters["Step"]["HadoopJarStep"]["Args"])
        try:
            self._compute().run_emr_step(parameters["ClusterId"], args)
        except JobFailed as failure:
            step.update(State="FAILED", FailureDetails={"Message": str(failure)})
            raise _task_failed(self, env, {"Step": {"Id": step["Id"], "Name": step["Name"],
                                                    "Status": {"State": "FAILED", "FailureDetails": {"Message": str(failure)}}}}) from None
        step["State"] = "COMPLETED"
        return {"Step": {"Id": step["Id"], "Name": step["Name"], "Status": {"State": "COMPLETED"}}}


class LocalLambda(StateTaskServiceLambda):
    """`lambda:invoke` (request-response): the bound compute's `invoke_function`, as Lambda answers it."""

    def _eval_service_task(self, env, resource_runtime_part, normalised_parameters, state_credentials) -> None:
        compute = BINDING.compute
        if compute is None or not hasattr(compute, "invoke_function"):
            raise RuntimeError("no local compute with invoke_function bound: lambda:invoke cannot run locally")
        payload = json.loads(normalised_parameters.get("Payload") or b"{}")
        try:
            result = compute.invoke_function(normalised_parameters["FunctionName"], payload)
        except Exception as error:  # noqa: BLE001 - Lambda reports any exception as the function's error
            raise lambda_eval_utils.LambdaFunctionErrorException(
                "Unhandled", json.dumps({"errorType": type(error).__name__, "errorMessage": str(error)})) from None
        env.stack.append({"StatusCode": 200, "ExecutedVersion": "$LATEST", "Payload": json.loads(json.dumps(result))})


def _eval_jsonata(expression: str) -> Any:
    """jsonata-python, with the JSON round trip and error type of moto's (removed) JVM bridge."""
    try:
        return json.loads(json.dumps(jsonata.Jsonata(expression).evaluate(None)))
    except Exception as error:  # noqa: BLE001 - every evaluation error is a JSONata error to the engine
        raise moto_jsonata.JSONataException("UNKNOWN", str(error)) from None


def _aws_sdk_response(self, response, boto_service_name=None, service_action_name=None) -> None:
    """AWS hands the state the object body as text (s3:getObject), not a stream."""
    if isinstance(response, dict):
        for key, value in list(response.items()):
            if isinstance(value, StreamingBody):
                response[key] = value.read().decode("utf-8")


_original_sfn_parameters = StateTaskServiceSfn._normalise_parameters


def _sfn_operation(task, action: str | None):
    name = task._get_boto_service_action(action)
    model = botocore.session.get_session().get_service_model("stepfunctions")
    return model.operation_model("".join(part.capitalize() for part in name.split("_")))


def _sfn_parameters(self, parameters, boto_service_name=None, service_action_name=None) -> None:
    _original_sfn_parameters(self, parameters, boto_service_name, service_action_name)
    self._to_boto_request(parameters, _sfn_operation(self, service_action_name).input_shape)


def _sfn_response(self, response, boto_service_name=None, service_action_name=None) -> None:
    self._from_boto_response(response, _sfn_operation(self, service_action_name).output_shape)
    if isinstance(response, dict):  # moto's describe_execution json.dumps() the output: no datetimes
        for key, value in list(response.items()):
            if isinstance(value, datetime.datetime):
                response[key] = value.isoformat()


def _scaled_sleep(seconds: float) -> None:
    BINDING.retry_sleeps.append(seconds)
    time.sleep(seconds * BINDING.retry_scale)


_original_service_for = state_task_service_factory.state_task_service_for


def _service_for(service_name: str):
    if service_name == "glue":
        return LocalGlue()
    if service_name == "elasticmapreduce":
        return LocalEmr()
    if service_name == "lambda":
        return LocalLambda()
    return _original_service_for(service_name)


SYNC_CHECK_SECONDS = 0.05


def install(compute: LocalCompute | None, retry_scale: float = 1.0) -> _Binding:
    """Bind the compute and patch the engine (once per process); returns the live binding."""
    global _installed
    BINDING.compute, BINDING.retry_scale = compute, retry_scale
    BINDING.clusters, BINDING.retry_sleeps = LocalClusters(), []
    if not _installed:
        # moto logs every state failure at ERROR, Catch-handled ones included; the execution
        # history (and `run`'s report) already says what failed and why.
        logging.getLogger("moto.stepfunctions.parser").setLevel(logging.CRITICAL)
        moto_jsonata._eval_jsonata = _eval_jsonata
        StateTaskServiceAwsSdk._normalise_response = _aws_sdk_response
        StateTaskServiceSfn._normalise_parameters = _sfn_parameters
        StateTaskServiceSfn._normalise_response = _sfn_response
        retrier_decl.time = types.SimpleNamespace(sleep=_scaled_sleep)
        # state_task_factory imported the function by name: both bindings must change.
        state_task_service_factory.state_task_service_for = _service_for
        state_task_factory.state_task_service_for = _service_for
        state_task_service_callback._DELAY_SECONDS_SYNC_CONDITION_CHECK = SYNC_CHECK_SECONDS
        _installed = True
    return BINDING
