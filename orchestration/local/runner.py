"""Execute the rendered state machines locally: `audience-relay run` and the executed-definition tests.

The definitions are the ones `audience-relay definitions` renders for AWS, unchanged; only
the resources behind them are local (moto server in this process, jobs as local processes).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from audience_relay.connectors.state.lease import lease_key
from audience_relay.orchestration.definitions import machines
from audience_relay.orchestration.local import engine
from audience_relay.orchestration.local.compute import ScriptCompute
from audience_relay.orchestration.local.stack import Execution, LocalAws
from audience_relay.orchestration.machines.specs import MachineSpec, Resources

ALERT_TAP_QUEUE = "audience-relay-alerts-local"   # local only: lets a run show the SNS alerts it sent


class LocalStateMachines:
    """The deployed machines on local AWS. Use as a context manager, then `bind` a compute."""

    def __init__(self, specs: list[MachineSpec], resources: Resources = Resources(), retry_scale: float = 0.01) -> None:
        self.specs, self.resources, self.retry_scale = specs, resources, retry_scale
        self.aws = LocalAws()
        self.arns: dict[str, str] = {}
        self.binding = None

    def __enter__(self) -> LocalStateMachines:
        self.aws.__enter__()
        try:
            # Patched before the machines are created: parsing a definition builds its task objects.
            self.binding = engine.install(None, self.retry_scale)
            self.aws.create(self.resources)
            sqs, sns = self.aws.client("sqs"), self.aws.client("sns")
            tap = sqs.create_queue(QueueName=ALERT_TAP_QUEUE)["QueueUrl"]
            tap_arn = sqs.get_queue_attributes(QueueUrl=tap, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            sns.subscribe(TopicArn=self.resources.alert_topic_arn, Protocol="sqs", Endpoint=tap_arn)
            self.arns = self.aws.deploy(machines(self.specs, self.resources))
        except BaseException:
            self.aws.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.aws.__exit__(*exc)

    def bind(self, compute: engine.LocalCompute) -> None:
        engine.install(compute, self.retry_scale)

    def upload_config(self, path: Path) -> None:
        parsed = urlparse(self.resources.config_uri)
        self.aws.client("s3").put_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"), Body=Path(path).read_bytes())

    def start(self, machine: str, name: str, payload: dict) -> str:
        return self.aws.start(self.arns[machine], name, payload)

    def run(self, machine: str, name: str, payload: dict, timeout: float = 3600.0) -> Execution:
        return self.aws.wait(self.start(machine, name, payload), timeout)

    def executions(self, machine: str) -> list[Execution]:
        """Every execution of a machine (ended or not), oldest first."""
        found = [self.aws.wait(e["executionArn"], timeout=0) for e in self.aws.executions(self.arns[machine])]
        return sorted(found, key=lambda e: e.name)

    def alerts(self) -> list[dict]:
        """The SNS alerts sent since the last call: subject and parsed message."""
        return [{"subject": n.get("Subject"), "message": json.loads(n["Message"])}
                for n in self.aws.drain(ALERT_TAP_QUEUE)]

    def dead_letters(self) -> list[dict]:
        """The failure records sent to the dead-letter queue since the last call."""
        return self.aws.drain(self.resources.dead_letter_queue_url)

    def lease(self, quota_key: str) -> dict:
        item = self.aws.client("dynamodb").get_item(
            TableName=self.resources.state_table, Key={k: {"S": v} for k, v in lease_key(quota_key).items()}, ConsistentRead=True,
        ).get("Item", {})
        return {key: next(iter(value.values())) for key, value in item.items()}


@dataclass
class LocalRunReport:
    run_id: str
    execution: Execution
    destinations: dict[str, Execution]
    alerts: list[dict]
    dead_letters: list[dict]
    jobs: list[str]


def run_locally(specs: list[MachineSpec], config_path: Path, run_input: dict, out: Path, scripts: dict[str, Path],
                destination: str | None = None, retry_scale: float = 0.01, timeout: float = 24 * 3600.0) -> LocalRunReport:
    """Run one input through the scheduler (every destination) or one destination's machine."""
    resources = Resources()
    machine = f"destination-{destination}" if destination else "scheduler"
    with LocalStateMachines(specs, resources, retry_scale) as local:
        compute = ScriptCompute(scripts, resources.work_bucket, out, local.aws.environment(), local.aws.client("s3"))
        local.bind(compute)
        local.upload_config(config_path)
        execution = local.run(machine, run_input["run_id"], run_input, timeout)
        # A destination machine run on its own continues as a new execution after many deferrals.
        while execution.output and execution.output.get("status") == "CONTINUED_AS_NEW":
            execution = local.aws.wait(execution.output["execution"], timeout)
        children = {s.id: e for s in specs for e in local.executions(f"destination-{s.id}")}
        return LocalRunReport(run_input["run_id"], execution, children, local.alerts(), local.dead_letters(),
                              [label for label, _ in compute.runs])
