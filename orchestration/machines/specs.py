"""What the machines are built from: each destination's spec and the stage's resource names."""
from __future__ import annotations

from dataclasses import dataclass


# Destination ids are lower case and start with a letter or digit: no destination's machine takes this name.
REGISTERED = "_registered"
REGISTERED_MACHINE = f"destination-{REGISTERED}"



@dataclass(frozen=True)
class EmrCluster:
    """The on-demand cluster a destination's machine prepares on (config `orchestration.emr`)."""

    release: str = "emr-7.9.0"   # Spark 3.5, like Glue 5.1
    instance_type: str = "m6g.xlarge"
    core_instances: int = 2
    idle_timeout_seconds: int = 3600   # a backstop: the machine terminates the cluster itself
    subnet_id: str | None = None   # else the default VPC; tagged for-use-with-amazon-emr-managed-policies=true either way


@dataclass(frozen=True)
class MachineSpec:
    """What a destination's machine needs to know (built by jobs/ from the config)."""

    id: str
    kind: str
    profile: str
    quota_key: str
    prepare_engine: str = "glue"
    transform_job: str | None = None
    emr: EmrCluster = EmrCluster()   # the cluster when prepare_engine is "emr"


@dataclass(frozen=True)
class Resources:
    """Names and ARNs the definitions point at; infra/ creates them per stage."""

    stage: str = "local"   # tags the EMR clusters a stage's machines create (and may drive)
    registry_table: str | None = None   # the scheduler fans out to its active destinations (else the rendered list)
    registry_page_size: int | None = None   # items per registry scan page (tests); DynamoDB's 1 MB page otherwise
    state_table: str = "audience-relay-state"
    prepare_job: str = "audience-relay-prepare"
    deliver_job: str = "audience-relay-deliver"
    # Each destination's machine runs a deliver job of its own, `<deliver_job>-<id>` (a deployed
    # stage: each under a role that reads only that destination's secret); `deliver_job` then
    # runs the destinations registered since the deploy.
    own_deliver_jobs: bool = False
    work_bucket: str = "audience-relay-work"
    config_uri: str = "s3://audience-relay-artifacts/config/destinations.yaml"
    alert_topic_arn: str = "arn:aws:sns:us-east-1:123456789012:audience-relay-alerts"
    dead_letter_queue_url: str = "https://sqs.us-east-1.amazonaws.com/123456789012/audience-relay-failures"
    destination_machine_arn_prefix: str = "arn:aws:states:us-east-1:123456789012:stateMachine:audience-relay-destination-"
    # On-demand EMR clusters for destinations whose config says `prepare_engine: emr`.
    prepare_script_uri: str = "s3://audience-relay-artifacts/jobs/prepare.py"
    library_wheel_uri: str = "s3://audience-relay-artifacts/dist/audience_relay-0.1.0-py3-none-any.whl"
    emr_bootstrap_uri: str = "s3://audience-relay-artifacts/emr/bootstrap.sh"   # infra/emr/bootstrap.sh
    emr_service_role: str = "audience-relay-emr-service"
    emr_instance_profile: str = "audience-relay-emr-instance"
    emr_log_uri: str = "s3://audience-relay-artifacts/emr-logs/"
    lease_seconds: int = 4 * 3600
    job_timeout_seconds: int = 8 * 3600   # a hung Glue run or EMR step fails the task instead of hanging the machine
    cluster_timeout_seconds: int = 3600
    retry_wait_seconds: int = 900   # deferred without a resume_at (nothing sent yet): look again after this
    deliver_retry_seconds: int = 60  # a failed Deliver attempt is retried after this, times the attempt number
    deliver_retries: int = 3
    max_deferrals: int = 30
    continue_every: int = 10
    # Delivery feedback: the scheduler starts the feedback machine after a run delivered everywhere
    # (when its ARN is set), which waits for the platforms to count the uploads, then asks them.
    feedback_machine_arn: str | None = None
    feedback_delay_seconds: int = 6 * 3600
    feedback_function: str = "audience-relay-feedback"
    feedback_job: str = "audience-relay-feedback"
    feedback_concurrency: int = 10
    # The run catalog's Lambda (inside the catalog's VPC): when set, the scheduler records each
    # run's accounting there once its destinations have ended.
    catalog_function: str | None = None



def machine_specs(destinations) -> list[MachineSpec]:
    """One spec per configured destination (`pipeline.config` destination objects)."""
    return [MachineSpec(d.id, d.kind, d.profile, d.quota_key, d.orchestration.prepare_engine, d.orchestration.transform_job,
                        EmrCluster(**d.orchestration.emr.model_dump()))
            for d in destinations]


