"""AWS Step Functions: starting and describing the executions of our state machines."""
from __future__ import annotations

import json

from audience_relay.connectors.aws.clients import client as make_client


def client():
    return make_client("stepfunctions")


def start_execution(sfn, machine_arn: str, name: str, payload: dict) -> dict:
    """Start `machine_arn` as execution `name` with `payload` as its JSON input; the name makes a
    repeated start of the same run an ExecutionAlreadyExists, never a second execution."""
    return sfn.start_execution(stateMachineArn=machine_arn, name=name, input=json.dumps(payload))
