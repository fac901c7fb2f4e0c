"""Local AWS for the state machines: a moto server on loopback, in this process.

In-process because the engine patches (`engine.install`) must live where moto's ASL
interpreter runs. Jobs started by the local compute are separate processes; they reach the
same server through `environment()` (AWS_ENDPOINT_URL and test credentials).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlparse

from moto.moto_server.werkzeug_app import MotoRequestHandler
from werkzeug.serving import make_server

from audience_relay.connectors.aws import clients
from audience_relay.connectors.state.dynamodb import create_registry_table, create_table
from audience_relay.orchestration.local.moto_app import moto_app
from audience_relay.orchestration.machines.specs import Resources

REGION = "us-east-1"
_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Execution:
    """How one execution ended, with what the tests and the CLI need to explain it."""

    arn: str
    name: str
    status: str
    output: dict | None
    error: str | None
    cause: str | None
    states: list[str] = field(default_factory=list)


class LocalAws:
    """Start with `with LocalAws() as aws:`; Step Functions executes definitions for real."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._saved_env: dict[str, str | None] = {}

    def __enter__(self) -> LocalAws:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one INFO line per request otherwise
        self._server = make_server("127.0.0.1", self.port, moto_app(), threaded=True, request_handler=MotoRequestHandler)
        self._serving = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._serving.start()
        # The engine's own clients go to http://localhost:$MOTO_PORT (moto's boto_client_for).
        # moto's Wait compares a UTC `Timestamp` with the naive local clock: run in UTC.
        self._set_env({"MOTO_PORT": str(self.port), "TZ": "UTC"})
        time.tzset()
        # moto's backends are process-wide: start from nothing, whatever ran before here.
        self._moto_api("reset")
        self._moto_api("config", {"stepfunctions": {"execute_state_machine": True}})
        return self

    def __exit__(self, *exc) -> None:
        self._moto_api("reset")
        self._server.shutdown()
        self._serving.join()
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        time.tzset()

    def _moto_api(self, action: str, body: dict | None = None) -> None:
        request = urllib.request.Request(f"{self.endpoint}/moto-api/{action}", method="POST", data=json.dumps(body or {}).encode())
        urllib.request.urlopen(request, timeout=30).close()

    def _set_env(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def environment(self) -> dict[str, str]:
        """What a job process needs to use this server as its AWS."""
        return {"AWS_ENDPOINT_URL": self.endpoint, **_CREDENTIALS}

    def client(self, service: str):
        return clients.client(service, endpoint_url=self.endpoint, region_name=REGION,
                              aws_access_key_id="testing", aws_secret_access_key="testing")

    def create(self, resources: Resources) -> None:
        """The table, buckets, topic and queue the definitions name (infra/ makes them in AWS)."""
        create_table(resources.state_table, self.client("dynamodb"))
        if resources.registry_table:
            create_registry_table(resources.registry_table, self.client("dynamodb"))
        s3 = self.client("s3")
        for uri in (f"s3://{resources.work_bucket}", resources.config_uri, resources.prepare_script_uri):
            bucket = urlparse(uri).netloc
            if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
                s3.create_bucket(Bucket=bucket)
        self.client("sns").create_topic(Name=resources.alert_topic_arn.rsplit(":", 1)[1])
        self.client("sqs").create_queue(QueueName=resources.dead_letter_queue_url.rsplit("/", 1)[1])

    def deploy(self, definitions: dict[str, dict], prefix: str = "audience-relay-") -> dict[str, str]:
        """Create (or update) one state machine per definition; returns their ARNs by name."""
        sfn = self.client("stepfunctions")
        role = "arn:aws:iam::123456789012:role/audience-relay-states"
        existing = {m["name"]: m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]}
        arns = {}
        for name, definition in definitions.items():
            definition = standard_children(definition)
            full = prefix + name
            if full in existing:
                sfn.update_state_machine(stateMachineArn=existing[full], definition=json.dumps(definition))
                arns[name] = existing[full]
            else:
                arns[name] = sfn.create_state_machine(name=full, definition=json.dumps(definition), roleArn=role)["stateMachineArn"]
        return arns

    def start(self, machine_arn: str, name: str, payload: dict) -> str:
        return self.client("stepfunctions").start_execution(stateMachineArn=machine_arn, name=name, input=json.dumps(payload))["executionArn"]

    def wait(self, execution_arn: str, timeout: float = 3600.0) -> Execution:
        """Block until the execution ends (or `timeout` seconds pass: then its status is RUNNING).
        Looks often at first (most test executions end within a second), then every 0.5 s."""
        sfn = self.client("stepfunctions")
        deadline = time.monotonic() + timeout
        poll = 0.02
        while True:
            described = sfn.describe_execution(executionArn=execution_arn)
            if described["status"] != "RUNNING" or time.monotonic() > deadline:
                break
            time.sleep(poll)
            poll = min(0.5, poll * 1.5)
        output = described.get("output")
        return Execution(
            arn=execution_arn, name=described["name"], status=described["status"],
            output=json.loads(output) if output else None, error=described.get("error"), cause=described.get("cause"),
            states=self.states_entered(execution_arn),
        )

    def states_entered(self, execution_arn: str) -> list[str]:
        """The names of the states the execution entered, in order (retries show as one entry)."""
        sfn = self.client("stepfunctions")
        names, token = [], None
        while True:
            page = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000, **({"nextToken": token} if token else {}))
            for event in page["events"]:
                details = event.get("stateEnteredEventDetails")
                if details:
                    names.append(details["name"])
            token = page.get("nextToken")
            if not token:
                return names

    def executions(self, machine_arn: str) -> list[dict]:
        return self.client("stepfunctions").list_executions(stateMachineArn=machine_arn)["executions"]

    def drain(self, queue: str) -> list[dict]:
        """Every message now in a queue (named, or by its AWS URL), parsed and deleted."""
        sqs, found = self.client("sqs"), []
        url = self.queue_url(queue)
        while True:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return found
            for message in messages:
                found.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    def queue_url(self, queue: str) -> str:
        """The local URL of a queue given by name or by its AWS URL."""
        return self.client("sqs").get_queue_url(QueueName=queue.rsplit("/", 1)[-1])["QueueUrl"]


def standard_children(definition: dict) -> dict:
    """moto's ASL grammar accepts only STANDARD child executions for a Distributed Map; AWS runs
    our EXPRESS ones. Locally they run as STANDARD: the same states, the same answers."""
    text = json.dumps(definition)
    return json.loads(text.replace('"ExecutionType": "EXPRESS"', '"ExecutionType": "STANDARD"'))
