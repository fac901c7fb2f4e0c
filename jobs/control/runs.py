"""Runs through the control plane: start a destination's state machine, read how one of its runs went.

A run started here is the destination machine's own run (it prepares the input for that
destination alone, then delivers), named by its run id, so a second start of the same run id is
refused rather than run twice. How it went comes from where the pipeline keeps it: the
execution (followed through continue-as-new), the delivery summary in the work bucket
(status, batches, row accounting) and the run's dead letters in the state table.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import asdict, dataclass

import boto3
from botocore.exceptions import ClientError

from connectors.state.dynamodb import DynamoStateStore
from jobs.control.errors import Conflict, Invalid, NotFound
from jobs.control.registry import Registered
from jobs.paths import RUN_ID

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
        self._sfn = sfn or boto3.client("stepfunctions")
        self._s3 = s3 or boto3.client("s3")
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
        machine = self.locations.destination_machine_arn_prefix + destination.id
        payload = {"run_id": run_id, "input": body["input"], "consent": body["consent"]}
        try:
            started = self._sfn.start_execution(stateMachineArn=machine, name=run_id, input=json.dumps(payload))
        except ClientError as error:
            code = error.response["Error"]["Code"]
            if code == "ExecutionAlreadyExists":
                raise Conflict(f"run {run_id!r} of {destination.id!r} was started before; give a new run_id") from None
            if code == "StateMachineDoesNotExist":
                raise Conflict(f"destination {destination.id!r} has no state machine in this stage yet") from None
            raise
        return {"run_id": run_id, "destination": destination.id, "execution_arn": started["executionArn"], "status": "RUNNING"}

    def status(self, destination_id: str, run_id: str) -> dict:
        if not RUN_ID.fullmatch(run_id):
            raise Invalid(f"run_id: {run_id!r} must match {RUN_ID.pattern}")
        machine = self.locations.destination_machine_arn_prefix + destination_id
        arn = machine.replace(":stateMachine:", ":execution:", 1) + ":" + run_id
        executions = []
        for _ in range(MAX_CONTINUATIONS):
            try:
                described = self._sfn.describe_execution(executionArn=arn)
            except ClientError as error:
                if error.response["Error"]["Code"] != "ExecutionDoesNotExist" or executions:
                    raise
                raise NotFound(f"no run {run_id!r} of destination {destination_id!r}") from None
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

    def _summary(self, run_id: str, destination_id: str) -> dict | None:
        key = f"runs/{run_id}/delivery/{destination_id}/summary.json"
        try:
            return json.loads(self._s3.get_object(Bucket=self.locations.work_bucket, Key=key)["Body"].read())
        except ClientError as error:
            if error.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None   # not delivered yet
            raise
