"""Step Functions definitions (ASL, JSONata) built from the destination config.

One Standard state machine per destination runs its whole delivery lifecycle:
acquire the quota lease -> prepare its own run, unless the scheduler prepared it already (a
Glue job, or a step on an on-demand EMR cluster created and terminated by the machine; then
an optional extra Glue transform job) -> deliver (Glue job) -> read the delivery summary -> done, or on `QUOTA_DEFERRED` release the lease, wait
until `resume_at` and deliver again. Every phase has a typed `Catch` that releases the lease,
alerts (SNS), records the failure with the execution's context (SQS dead-letter queue) and
fails with an error naming the phase. Deferrals are counted in the state; past the limit the
execution fails loudly, and every `continue_every` deferrals it continues as a new execution
to stay far from the 25,000-event history limit.

A scheduler machine prepares one input once for every active destination (normalizing
billions of rows once, not once per destination), then fans out to the per-destination
machines with a Map (`states:startExecution.sync:2`, bounded concurrency), so one slow or
failing destination never stalls the others; it fails at the end, naming the destinations
that failed.

A destination registered through the control plane after the last deploy has no machine of its
own yet: the scheduler, and the control plane's run start, run it on `destination-_registered`,
the same lifecycle reading the destination and its quota key from the execution input and
preparing on Glue. Every machine takes the quota key from its input when given (the scheduler
passes the registry's), so a quota change through the control plane needs no deploy either.
"""
from __future__ import annotations

import json
from pathlib import Path

from audience_relay.orchestration.machines.destination import destination_machine
from audience_relay.orchestration.machines.feedback import feedback_machine
from audience_relay.orchestration.machines.scheduler import scheduler_machine
from audience_relay.orchestration.machines.specs import REGISTERED_MACHINE, MachineSpec, Resources


def render(destinations: list[MachineSpec], resources: Resources, out: str | Path) -> list[Path]:
    """Write one ASL JSON file per machine; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, definition in machines(destinations, resources).items():
        path = out / f"{name}.asl.json"
        path.write_text(json.dumps(definition, indent=2) + "\n")
        written.append(path)
    return written


def machines(destinations: list[MachineSpec], resources: Resources) -> dict[str, dict]:
    """Every machine's definition by name: `destination-<id>` for each destination, REGISTERED_MACHINE, `scheduler` and `feedback`."""
    found = {f"destination-{d.id}": destination_machine(d, resources) for d in destinations}
    found[REGISTERED_MACHINE] = destination_machine(None, resources)
    found["scheduler"] = scheduler_machine(destinations, resources)
    found["feedback"] = feedback_machine(resources)
    return found

