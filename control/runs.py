"""Runs through the control plane: start a destination's state machine, read how one of its runs went.

A run started here is the destination machine's own run (it prepares the input for that
destination alone, then delivers), named by its run id, so a second start of the same run id is
refused rather than run twice. A destination registered after the last deploy has no machine of
its own: its run goes to the registered destinations' machine (orchestration.machines.destination
REGISTERED_MACHINE), named `<run id>-<destination>`, unless it needs a shape only its own machine
has (an EMR prepare, a transform job). How it went comes from where the pipeline keeps it: the
execution (followed through continue-as-new), the delivery summary in the work bucket
(status, batches, row accounting) and the run's dead letters in the state table.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import asdict, dataclass

from botocore.exceptions import ClientError

from audience_relay.connectors.aws import stepfunctions
from audience_relay.connectors.aws.s3 import client as s3_client
from audience_relay.connectors.state.dynamodb import DynamoStateStore
from audience_relay.control.errors import Conflict, Invalid, NotFound
from audience_relay.control.registry import Registered
from audience_relay.orchestration.machines.specs import REGISTERED
from audience_relay.pipeline import removals
from audience_relay.pipeline.paths import RUN_ID

S3_FOLDER = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/\S*$")
MAX_CONTINUATIONS = 100


@dataclass(frozen=True)
class RunLocations:
    """Where a stage keeps its machines and run state (the orchestration stack's resources)."""

    destination_machine_arn_prefix: str
    work_bucket: str
    state_table: str


class Runs:
    def __init__(self, locations: RunLocations, sfn=None, s3=None, store: DynamoStateStore | None = None) -> None:
        self.locations = locations
        self._sfn = sfn or stepfunctions.client()
        self._s3 = s3 or s3_client()
        self._store = store or DynamoStateStore(locations.state_table)

    def start(self, destination: Registered, body: object) -> dict:
        if not isinstance(body, dict):
            raise Invalid("the body must be a mapping: {\"input\": \"s3://...\", \"consent\": \"s3://...\", \"run_id\": optional}")
        unknown = sorted(set(body) - {"input", "consent", "run_id"})
        if unknown:
            raise Invalid(f"{unknown[0]}: unknown key")
        for name in ("input", "consent"):
            if not isinstance(body.get(name), str) or not S3_FOLDER.match(body[name]):
                raise Invalid(f"{name}: an s3://bucket/folder/ URI is required")
        run_id = body.get("run_id") or f"api-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
        if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
            raise Invalid(f"run_id: {run_id!r} must match {RUN_ID.pattern}")
        if not destination.active:
            raise Conflict(f"destination {destination.id!r} is paused; resume it first")
        # The registry's quota key: the lease the delivery takes is the one the live config names.
        payload = {"run_id": run_id, "input": body["input"], "consent": body["consent"], "quota_key": destination.destination.quota_key}
        try:
            try:
                started = self._start(destination.id, run_id, payload)
            except ClientError as error:
                if error.response["Error"]["Code"] != "StateMachineDoesNotExist":
                    raise
                started = self._start_registered(destination, run_id, payload)
        except ClientError as error:
            if error.response["Error"]["Code"] == "ExecutionAlreadyExists":
                raise Conflict(f"run {run_id!r} of {destination.id!r} was started before; give a new run_id") from None
            raise
        return {"run_id": run_id, "destination": destination.id, "execution_arn": started["executionArn"], "status": "RUNNING"}

    def _start(self, machine_id: str, name: str, payload: dict) -> dict:
        machine = self.locations.destination_machine_arn_prefix + machine_id
        return stepfunctions.start_execution(self._sfn, machine, name, payload)

    def _start_registered(self, destination: Registered, run_id: str, payload: dict) -> dict:
        """A destination without its own machine yet runs on the registered destinations' machine."""
        settings = destination.destination
        if settings.orchestration.prepare_engine != "glue" or settings.orchestration.transform_job:
            raise Conflict(f"destination {destination.id!r} prepares on EMR or runs a transform job, which only a machine of "
                           "its own does, and it has none in this stage yet: deploy first")
        payload = {**payload, "destination": destination.id}
        return self._start(REGISTERED, f"{run_id}-{destination.id}", payload)

    def _execution(self, destination_id: str, run_id: str) -> tuple[str, dict]:
        """The run's first execution: on the destination's own machine, else on the registered destinations' one."""
        prefix = self.locations.destination_machine_arn_prefix.replace(":stateMachine:", ":execution:", 1)
        for arn in (f"{prefix}{destination_id}:{run_id}", f"{prefix}{REGISTERED}:{run_id}-{destination_id}"):
            try:
                return arn, self._sfn.describe_execution(executionArn=arn)
            except ClientError as error:
                if error.response["Error"]["Code"] not in ("ExecutionDoesNotExist", "StateMachineDoesNotExist"):
                    raise
        raise NotFound(f"no run {run_id!r} of destination {destination_id!r}")

    def status(self, destination_id: str, run_id: str) -> dict:
        if not RUN_ID.fullmatch(run_id):
            raise Invalid(f"run_id: {run_id!r} must match {RUN_ID.pattern}")
        arn, described = self._execution(destination_id, run_id)
        executions = []
        for _ in range(MAX_CONTINUATIONS):
            if executions:
                described = self._sfn.describe_execution(executionArn=arn)
            output = json.loads(described.get("output") or "null")
            executions.append({"execution_arn": arn, "status": described["status"], "error": described.get("error"),
                               "started_at": described["startDate"].isoformat(),
                               "stopped_at": described["stopDate"].isoformat() if described.get("stopDate") else None})
            if not (isinstance(output, dict) and output.get("status") == "CONTINUED_AS_NEW"):
                break
            arn = output["execution"]
        letters = [asdict(letter) for letter in self._store.dead_letters(run_id) if letter.destination_id == destination_id]
        return {"run_id": run_id, "destination": destination_id, "status": executions[-1]["status"], "executions": executions,
                "summary": self._summary(run_id, destination_id), "dead_letters": letters}

    def decide_removals(self, destination: Registered, run_id: str, body: object, principal: str) -> dict:
        """Record the caller's decision on the run's held removals, then deliver the run again
        (its machine from the lease on, the run being prepared) so they are sent or it is committed."""
        if not RUN_ID.fullmatch(run_id):
            raise Invalid(f"run_id: {run_id!r} must match {RUN_ID.pattern}")
        if not isinstance(body, dict) or body.get("decision") not in (removals.APPROVED, removals.REJECTED):
            raise Invalid(f"decision: {removals.APPROVED!r} or {removals.REJECTED!r} is required")
        unknown = sorted(set(body) - {"decision", "audiences"})
        if unknown:
            raise Invalid(f"{unknown[0]}: unknown key")
        audiences = body.get("audiences")
        if audiences is not None and not (isinstance(audiences, list) and audiences and all(isinstance(a, str) for a in audiences)):
            raise Invalid("audiences: a non-empty list of audience ids, or left out for every held audience")
        _, described = self._execution(destination.id, run_id)
        try:
            decided = removals.decide(f"s3://{self.locations.work_bucket}", run_id, destination.id, body["decision"], principal, audiences)
        except removals.RemovalsError as error:
            raise Conflict(str(error)) from None
        payload = {**json.loads(described["input"]), "prepared": True}
        name = f"{run_id}-removals-{uuid.uuid4().hex[:8]}"
        started = stepfunctions.start_execution(self._sfn, described["stateMachineArn"], name, payload)
        return {"run_id": run_id, "destination": destination.id, "removals": decided, "execution_arn": started["executionArn"],
                "status": "RUNNING"}

    def _summary(self, run_id: str, destination_id: str) -> dict | None:
        key = f"runs/{run_id}/delivery/{destination_id}/summary.json"
        try:
            return json.loads(self._s3.get_object(Bucket=self.locations.work_bucket, Key=key)["Body"].read())
        except ClientError as error:
            if error.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None   # not delivered yet
            raise
