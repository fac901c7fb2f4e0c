"""The orchestration stack (CloudFormation JSON), built from the same definitions the local runner executes.

The machines depend on the destination config (one per destination, and the scheduler's
fan-out list), so this stack is rendered, not written by hand: `audience-relay definitions
--stack FILE`. Each definition is rendered with `${Name}` placeholders for the stage's
resources and deployed with `DefinitionSubstitutions` that import them from the other stacks
(infra/templates/). Around the machines: their log group (KMS, level ALL), X-Ray tracing, a
role holding only the integrations the definitions call, an alarm on failed executions of each
machine; the ingest Lambda on the ingest queue (S3 completion markers start the scheduler) and,
when `ScheduleExpression` is given, an EventBridge schedule that starts it on a clock; one
Secrets Manager secret per destination whose credentials live there, and one deliver Glue job per
destination under a role that reads only that secret. With the run catalog
(infra/templates/catalog.yaml deployed), the catalog Lambda and the window ingest Lambda run in
its VPC, in the security group that alone reaches the database.
"""
from __future__ import annotations

import json
import re
from dataclasses import replace

from audience_relay.connectors.state.lease import LEASE_PREFIX
from audience_relay.orchestration.definitions import machines
from audience_relay.orchestration.machines.destination import CLUSTER_STAGE_TAG
from audience_relay.orchestration.machines.feedback import FEEDBACK_LAMBDA_SECONDS
from audience_relay.orchestration.machines.scheduler import CATALOG_LAMBDA_SECONDS
from audience_relay.orchestration.machines.specs import REGISTERED_MACHINE, MachineSpec, Resources

PLACEHOLDERS = Resources(
    stage="${Stage}",
    registry_table="${RegistryTable}",
    state_table="${StateTable}",
    prepare_job="${PrepareJob}",
    deliver_job="${DeliverJob}",
    own_deliver_jobs=True,
    work_bucket="${WorkBucket}",
    config_uri="s3://${ArtifactsBucket}/config/destinations.yaml",
    alert_topic_arn="${AlertTopicArn}",
    dead_letter_queue_url="${FailuresQueueUrl}",
    destination_machine_arn_prefix="${DestinationMachineArnPrefix}",
    prepare_script_uri="s3://${ArtifactsBucket}/jobs/prepare.py",
    library_wheel_uri="s3://${ArtifactsBucket}/${LibraryWheel}",
    emr_bootstrap_uri="s3://${ArtifactsBucket}/emr/bootstrap.sh",
    emr_service_role="${EmrServiceRoleArn}",
    emr_instance_profile="${EmrInstanceProfile}",
    emr_log_uri="s3://${ArtifactsBucket}/emr-logs/",
    feedback_machine_arn="${FeedbackMachineArn}",
    feedback_function="${FeedbackFunction}",
    feedback_job="${FeedbackJob}",
)
PLACEHOLDER = re.compile(r"\$\{([A-Za-z]+)\}")
STAGE = "audience-relay-${Stage}"
REGION_ACCOUNT = "${AWS::Region}:${AWS::AccountId}"


def _imported(export: str) -> dict:
    return {"Fn::ImportValue": {"Fn::Sub": f"{STAGE}-{export}"}}


def _arn(service: str, resource: str) -> dict:
    return {"Fn::Sub": f"arn:${{AWS::Partition}}:{service}:{REGION_ACCOUNT}:{resource}"}


def _logical_id(name: str) -> str:
    if name == REGISTERED_MACHINE:   # `destination-registered` would be a destination's
        return "RegisteredDestinationsMachine"
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-")) + "Machine"


def _statement(sid: str, actions: list[str], resources: list, leading_keys: list[str] | None = None) -> dict:
    """An Allow statement; `leading_keys`: the state-table partition keys it may touch (`LEASE#*`)."""
    statement = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}
    if leading_keys:
        statement["Condition"] = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": leading_keys}}
    return statement


def _bucket_objects(export: str, prefix: str = "") -> dict:
    return {"Fn::Sub": [f"arn:${{AWS::Partition}}:s3:::${{Bucket}}/{prefix}*", {"Bucket": _imported(export)}]}


def _role(name: str, service: str, statements: list[dict], unscoped: dict[str, str] | None = None) -> dict:
    role = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "RoleName": {"Fn::Sub": f"{STAGE}-{name}"},
            "PermissionsBoundary": {"Ref": "PermissionsBoundaryArn"},
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}}]},
            "Policies": [{"PolicyName": name, "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}],
        },
    }
    if unscoped:
        role["Metadata"] = {"audience-relay": {"unscoped": unscoped}}
    return role


def stage_tagged(kind: str) -> dict:
    """An IAM condition: the request's (RequestTag) or the cluster's (ResourceTag) stage tag is this stage."""
    return {"StringEquals": {f"aws:{kind}/{CLUSTER_STAGE_TAG}": {"Ref": "Stage"}}}


def _machines_role(names: list[str], catalog: bool) -> dict:
    """What the definitions call: Glue .sync, EMR .sync, child executions, the lease, the
    summary, the alert and the failures queue; plus log delivery and X-Ray, which have no
    resource-level permissions."""
    glue_jobs = [_arn("glue", f"job/{STAGE}-prepare"), _arn("glue", f"job/{STAGE}-deliver"), _arn("glue", f"job/{STAGE}-deliver-*"),
                 _arn("glue", f"job/{STAGE}-feedback")]
    destination_machines = _arn("states", f"stateMachine:{STAGE}-destination-*")
    statements = [
        _statement("RunGlueJobs", ["glue:StartJobRun", "glue:GetJobRun", "glue:GetJobRuns", "glue:BatchStopJobRun"], glue_jobs),
        {**_statement("RunPrepareClusters", ["elasticmapreduce:RunJobFlow"], ["*"]), "Condition": stage_tagged("RequestTag")},
        {**_statement("TagClustersOnCreation", ["elasticmapreduce:AddTags"], [_arn("elasticmapreduce", "cluster/*")]),
         "Condition": stage_tagged("RequestTag")},
        {**_statement("DriveOwnClusters", ["elasticmapreduce:DescribeCluster", "elasticmapreduce:TerminateJobFlows",
                                           "elasticmapreduce:AddJobFlowSteps", "elasticmapreduce:DescribeStep", "elasticmapreduce:CancelSteps"],
                      [_arn("elasticmapreduce", "cluster/*")]), "Condition": stage_tagged("ResourceTag")},
        _statement("PassClusterRoles", ["iam:PassRole"], [_imported("EmrServiceRoleArn"), _imported("EmrInstanceRoleArn")]),
        _statement("SyncRules", ["events:PutTargets", "events:PutRule", "events:DescribeRule"], [
            _arn("events", "rule/StepFunctionsGetEventForEMRRunJobFlowRule"),
            _arn("events", "rule/StepFunctionsGetEventForEMRAddJobFlowStepsRule"),
            _arn("events", "rule/StepFunctionsGetEventForEMRTerminateJobFlowsRule"),
            _arn("events", "rule/StepFunctionsGetEventsForStepFunctionsExecutionRule"),
        ]),
        _statement("StartDestinationMachines", ["states:StartExecution"], [destination_machines]),
        _statement("FollowDestinationExecutions", ["states:DescribeExecution", "states:StopExecution"],
                   [_arn("states", f"execution:{STAGE}-destination-*:*")]),
        _statement("ContinueAsNew", ["states:StartExecution"], [_arn("states", f"stateMachine:{name}") for name in names]),
        # The feedback machine's Distributed Map runs its children as executions of itself.
        _statement("FeedbackMapRuns", ["states:DescribeExecution", "states:StopExecution"],
                   [_arn("states", f"execution:{STAGE}-feedback/*")]),
        _statement("AskDestinations", ["lambda:InvokeFunction"], [_arn("lambda", f"function:{STAGE}-feedback")]),
        *([_statement("RecordInCatalog", ["lambda:InvokeFunction"], [_arn("lambda", f"function:{STAGE}-catalog")])] if catalog else []),
        _statement("Lease", ["dynamodb:UpdateItem", "dynamodb:GetItem"], [_imported("StateTableArn")], leading_keys=[f"{LEASE_PREFIX}*"]),
        _statement("ListRegisteredDestinations", ["dynamodb:Scan"], [_imported("RegistryTableArn")]),
        _statement("ReadSummaries", ["s3:GetObject"], [_bucket_objects("WorkBucket", "runs/")]),
        _statement("Alert", ["sns:Publish"], [_imported("AlertTopicArn")]),
        _statement("RecordFailure", ["sqs:SendMessage"], [_imported("FailuresQueueArn")]),
        _statement("EncryptedTopicAndQueue", ["kms:GenerateDataKey", "kms:Decrypt"], [_imported("DataKeyArn")]),
        _statement("LogDelivery", ["logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
                                   "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies",
                                   "logs:DescribeLogGroups"], ["*"]),
        _statement("Tracing", ["xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets"], ["*"]),
    ]
    return _role("machines", "states.amazonaws.com", statements, {
        "RunPrepareClusters": "RunJobFlow has no resource-level permissions; the request must tag the cluster with this stage",
        "LogDelivery": "CloudWatch Logs delivery actions have no resource-level permissions",
        "Tracing": "X-Ray actions have no resource-level permissions",
    })


# A `${Name}` in a definition is the export `audience-relay-<stage>-<Name>` of another stack,
# except these, which this stack knows itself. The wheel's key is a parameter, not an import:
# CloudFormation refuses to change an export another stack imports, and each release has a new key.
OWN = {
    "DestinationMachineArnPrefix": _arn("states", f"stateMachine:{STAGE}-destination-"),
    "FeedbackMachineArn": _arn("states", f"stateMachine:{STAGE}-feedback"),
    "FeedbackFunction": {"Fn::Sub": f"{STAGE}-feedback"},
    "CatalogFunction": {"Fn::Sub": f"{STAGE}-catalog"},
    "LibraryWheel": {"Ref": "LibraryWheel"},
    "Stage": {"Ref": "Stage"},
    "DeliverJob": {"Fn::Sub": f"{STAGE}-deliver"},   # REGISTERED_MACHINE's; a destination's adds `-<id>`
}


def _state_machine(name: str, definition: dict) -> dict:
    used = sorted(set(PLACEHOLDER.findall(json.dumps(definition))))
    substitutions = {placeholder: OWN.get(placeholder) or _imported(placeholder) for placeholder in used}
    return {
        "Type": "AWS::StepFunctions::StateMachine",
        "Properties": {
            "StateMachineName": {"Fn::Sub": f"{STAGE}-{name}"},
            "StateMachineType": "STANDARD",
            "RoleArn": {"Fn::GetAtt": ["MachinesRole", "Arn"]},
            "DefinitionString": json.dumps(definition, indent=1),
            "DefinitionSubstitutions": substitutions,
            "LoggingConfiguration": {
                "Level": "ALL",
                "IncludeExecutionData": True,  # run ids, paths and counts; never identifiers
                "Destinations": [{"CloudWatchLogsLogGroup": {"LogGroupArn": {"Fn::GetAtt": ["MachinesLogGroup", "Arn"]}}}],
            },
            "TracingConfiguration": {"Enabled": True},
        },
    }


def _failed_executions_alarm(logical_id: str, name: str) -> dict:
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmName": {"Fn::Sub": f"{STAGE}-{name}-failed"},
            "AlarmDescription": f"An execution of {name} failed; its dead letter is in the failures queue (runbook).",
            "Namespace": "AWS/States",
            "MetricName": "ExecutionsFailed",
            "Dimensions": [{"Name": "StateMachineArn", "Value": {"Ref": logical_id}}],
            "Statistic": "Sum",
            "Period": 300,
            "EvaluationPeriods": 1,
            "Threshold": 0,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": [_imported("AlertTopicArn")],
        },
    }


# The ingest Lambda's timeout per mode; the ingest queue's visibility timeout is six times it
# (messaging.yaml's IngestVisibilityTimeout, which deploy sets), and a window's unsettled claims
# may be taken over after twice it (orchestration/file_claims.py), long before its retry.
INGEST_TIMEOUT_SECONDS = {"marker": 50, "window": 150}


def ingest_visibility_timeout(mode: str) -> int:
    return 6 * INGEST_TIMEOUT_SECONDS[mode]


def _objects(bucket_export: str, path: dict | str) -> dict:
    """The ARN of objects under `path` in the bucket another stack exports."""
    return {"Fn::Join": ["", [{"Fn::Sub": ["arn:${AWS::Partition}:s3:::${Bucket}/", {"Bucket": _imported(bucket_export)}]}, path]]}


def _window_statements(window: dict) -> list[dict]:
    """What a window does beyond starting the scheduler: claims, checks, quarantine, copies, reports."""
    return [
        _statement("ClaimFiles", ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"],
                   [_imported("StateTableArn")], leading_keys=["FILE#*"]),
        _statement("ReadAndMoveLandedFiles", ["s3:GetObject", "s3:DeleteObject"],
                   [_objects("InputBucket", {"Fn::Sub": ["${Prefix}*", {"Prefix": _imported("InputPrefix")}]})]),
        _statement("Quarantine", ["s3:PutObject"], [_objects("InputBucket", f"{window['quarantine_prefix']}*")]),
        _statement("WriteRunInputs", ["s3:PutObject"], [_objects("WorkBucket", "runs/*/input/*")]),
        _statement("ReportQuarantined", ["sqs:SendMessage"], [_imported("IngestDeadLetterQueueArn")]),
        # A window given back after starting its run finds that run again (ingest_window._execution_exists).
        _statement("FindStartedRuns", ["states:DescribeExecution"], [_arn("states", f"execution:{STAGE}-scheduler:*")]),
        _statement("EncryptedBuckets", ["kms:GenerateDataKey"], [_imported("DataKeyArn")]),
    ]


# Lambda's ENIs in the catalog's VPC: created and deleted by the Lambda service with the
# function's role, for network interfaces not known before (AWSLambdaVPCAccessExecutionRole's actions).
VPC_ACCESS_ACTIONS = ["ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
                      "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"]


def _lambda_function(logical: str, role: str, statements: list[dict], *, code_key: str, handler: str, description: str,
                     timeout: int, memory: int, environment: dict, in_catalog_vpc: bool = False) -> dict[str, dict]:
    """`<logical>Role` (`statements`, then writing its own logs and X-Ray traces), `<logical>LogGroup`
    (/aws/lambda/<stage>-<name>, KMS) and `<logical>Function` (python3.11, the code at the key
    parameter `code_key` in the artifacts bucket, X-Ray, JSON logs); `in_catalog_vpc`: in the
    run catalog's subnets and client security group (catalog.yaml's exports)."""
    name = logical.lower()
    log_group = f"/aws/lambda/{STAGE}-{name}"
    unscoped = {"Tracing": "X-Ray actions have no resource-level permissions"}
    statements = [
        *statements,
        _statement("WriteOwnLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], [_arn("logs", f"log-group:{log_group}:*")]),
        _statement("Tracing", ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], ["*"]),
    ]
    if in_catalog_vpc:
        statements.append(_statement("VpcNetworkInterfaces", VPC_ACCESS_ACTIONS, ["*"]))
        unscoped["VpcNetworkInterfaces"] = "the Lambda service creates the function's network interfaces, unknown before, with its role"
    network = {"VpcConfig": {"SecurityGroupIds": [_imported("CatalogClientSecurityGroup")],
                             "SubnetIds": {"Fn::Split": [",", _imported("CatalogSubnetIds")]}}} if in_catalog_vpc else {}
    return {
        f"{logical}Role": _role(role, "lambda.amazonaws.com", statements, unscoped),
        f"{logical}LogGroup": {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {"LogGroupName": {"Fn::Sub": log_group}, "RetentionInDays": 90, "KmsKeyId": _imported("DataKeyArn")},
        },
        f"{logical}Function": {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "FunctionName": {"Fn::Sub": f"{STAGE}-{name}"},
                "Description": description,
                "Runtime": "python3.11",
                "Handler": handler,
                "Code": {"S3Bucket": _imported("ArtifactsBucket"), "S3Key": {"Ref": code_key}},
                "Role": {"Fn::GetAtt": [f"{logical}Role", "Arn"]},
                "Timeout": timeout,
                "MemorySize": memory,
                "KmsKeyArn": _imported("DataKeyArn"),
                "Environment": {"Variables": environment},
                "TracingConfig": {"Mode": "Active"},
                "LoggingConfig": {"LogGroup": {"Ref": f"{logical}LogGroup"}, "LogFormat": "JSON"},
                **network,
            },
        },
    }


def _catalog_settings() -> tuple[list[dict], dict]:
    """What a client of the run catalog reads (its secret, under the stage's key) and its
    environment (connectors/catalog/source.py): the DSN is built from the secret at each use."""
    statements = [_statement("ReadCatalogSecret", ["secretsmanager:GetSecretValue"], [_imported("CatalogSecretArn")]),
                  _statement("DecryptCatalogSecret", ["kms:Decrypt"], [_imported("DataKeyArn")])]
    environment = {"CATALOG_SECRET_ARN": _imported("CatalogSecretArn"), "CATALOG_HOST": _imported("CatalogHost"),
                   "CATALOG_PORT": _imported("CatalogPort")}
    return statements, environment


def _ingest_resources(window: dict | None = None, catalog: bool = False) -> dict[str, dict]:
    """The Lambda behind the ingest queue, its role and log group: `audience_relay.orchestration.ingest.handler`
    (a completion marker starts a run), or with `window` (the config's `ingest` section in window
    mode) `orchestration.ingest_window.handler`, the event source mapping gathering the windows.
    With the `catalog`, a window records its runs and files there, from inside its VPC."""
    mode = "window" if window else "marker"
    statements = [
        _statement("ConsumeIngestQueue", ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                                          "sqs:ChangeMessageVisibility"], [_imported("IngestQueueArn")]),
        _statement("StartScheduler", ["states:StartExecution"], [{"Ref": "SchedulerMachine"}]),
        _statement("EncryptedQueueAndEnvironment", ["kms:Decrypt"], [_imported("DataKeyArn")]),
        *(_window_statements(window) if window else []),
    ]
    consent = {"Fn::Sub": ["s3://${Bucket}/${ConsentPath}", {"Bucket": _imported("InputBucket")}]}
    environment = {"SCHEDULER_ARN": {"Ref": "SchedulerMachine"}, "CONSENT_URI": consent}
    if window:
        environment.update({
            "STATE_TABLE": _imported("StateTable"), "WORK_BUCKET": _imported("WorkBucket"),
            "QUARANTINE_PREFIX": window["quarantine_prefix"], "DEAD_LETTER_QUEUE_URL": _imported("IngestDeadLetterQueueUrl"),
            "MAX_FILE_BYTES": str(window["max_file_bytes"]), "CLAIM_STALE_SECONDS": str(2 * INGEST_TIMEOUT_SECONDS[mode]),
        })
    records = bool(window) and catalog
    if records:
        catalog_statements, catalog_environment = _catalog_settings()
        statements += catalog_statements
        environment.update(catalog_environment)
    return {
        **_lambda_function("Ingest", "ingest", statements, code_key="IngestCodeKey", environment=environment,
                           description=("landed files (via the ingest queue) are checked and each window of them starts one run"
                                        if window else "S3 completion markers (via the ingest queue) start the scheduler, once per marker event"),
                           handler="audience_relay.orchestration.ingest_window.handler" if window else "audience_relay.orchestration.ingest.handler",
                           timeout=INGEST_TIMEOUT_SECONDS[mode], memory=1024 if window else 256, in_catalog_vpc=records),
        "IngestEventSource": {
            "Type": "AWS::Lambda::EventSourceMapping",
            "Properties": {
                "EventSourceArn": _imported("IngestQueueArn"),
                "FunctionName": {"Ref": "IngestFunction"},
                "BatchSize": window["window_files"] if window else 10,   # one invocation is one window
                "MaximumBatchingWindowInSeconds": window["window_seconds"] if window else 5,
                "FunctionResponseTypes": ["ReportBatchItemFailures"],   # only the failing messages are retried
                "ScalingConfig": {"MaximumConcurrency": 5},
            },
        },
    }


def _feedback_resources() -> dict[str, dict]:
    """The Lambda the feedback machine asks the destinations with (lambdas.feedback), its role
    and log group: it reads the config, the destinations' credentials, and writes their parts."""
    statements = [
        _statement("ReadConfig", ["s3:GetObject"], [_objects("ArtifactsBucket", "config/*")]),
        _statement("WriteParts", ["s3:PutObject"], [_objects("WorkBucket", "runs/*/feedback/parts/*")]),
        _statement("ReadDestinationCredentials", ["secretsmanager:GetSecretValue"],
                   [_arn("secretsmanager", f"secret:{secret_name('${Stage}', '*')}")]),
        _statement("EncryptedBucketsAndSecrets", ["kms:Decrypt", "kms:GenerateDataKey"], [_imported("DataKeyArn")]),
    ]
    return _lambda_function(
        "Feedback", "feedback-lambda", statements, code_key="LambdaCodeKey", handler="audience_relay.lambdas.feedback.handler",
        description="asks one destination for its audience report (every page) and writes its part of a run's feedback",
        timeout=FEEDBACK_LAMBDA_SECONDS, memory=512,   # inside an Express child's 5 minutes, with a retry
        environment={"CONFIG_URI": {"Fn::Sub": ["s3://${Bucket}/config/destinations.yaml", {"Bucket": _imported("ArtifactsBucket")}]},
                     "WORK_BUCKET": _imported("WorkBucket")})


def _catalog_resources() -> dict[str, dict]:
    """The run catalog's Lambda (lambdas.catalog) in the catalog's VPC: deploy has it apply
    the migrations, the scheduler has it record each run's accounting, read from the work bucket."""
    statements, environment = _catalog_settings()
    statements = [
        _statement("ReadRuns", ["s3:GetObject"], [_objects("WorkBucket", "runs/*")]),
        # Unconditioned: a summary not written yet must answer 404, not 403.
        _statement("ListRuns", ["s3:ListBucket"], [{"Fn::Sub": ["arn:${AWS::Partition}:s3:::${Bucket}", {"Bucket": _imported("WorkBucket")}]}]),
        *statements,
    ]
    return _lambda_function(
        "Catalog", "catalog", statements, code_key="CatalogCodeKey", handler="audience_relay.lambdas.catalog.handler",
        description="the run catalog from inside its VPC: applies its migrations (deploy), records each run's accounting (scheduler)",
        timeout=CATALOG_LAMBDA_SECONDS, memory=512, in_catalog_vpc=True,
        environment={**environment, "WORK_BUCKET": _imported("WorkBucket")})


def _schedule_resources() -> dict[str, dict]:
    """An EventBridge schedule starting the scheduler with its scheduled time (see SCHEDULED_RUN)."""
    statements = [
        _statement("StartScheduler", ["states:StartExecution"], [{"Ref": "SchedulerMachine"}]),
        _statement("DeadLetterUndeliveredStarts", ["sqs:SendMessage"], [_imported("FailuresQueueArn")]),
        _statement("EncryptedFailuresQueue", ["kms:GenerateDataKey", "kms:Decrypt"], [_imported("DataKeyArn")]),
    ]
    payload = {"Fn::Sub": ['{"scheduled_time": "<aws.scheduler.scheduled-time>", "input": "${ScheduledInput}", '
                           '"consent": "s3://${Bucket}/${ConsentPath}"}', {"Bucket": _imported("InputBucket")}]}
    return {
        "ScheduleRole": {**_role("schedule", "scheduler.amazonaws.com", statements), "Condition": "HasSchedule"},
        "Schedule": {
            "Type": "AWS::Scheduler::Schedule",
            "Condition": "HasSchedule",
            "Properties": {
                "Name": {"Fn::Sub": f"{STAGE}-scheduler"},
                "Description": "starts the scheduler state machine; the run reads ScheduledInput with {date} = the scheduled day",
                "ScheduleExpression": {"Ref": "ScheduleExpression"},
                "ScheduleExpressionTimezone": {"Ref": "ScheduleTimezone"},
                "FlexibleTimeWindow": {"Mode": "OFF"},
                "State": "ENABLED",
                "Target": {
                    "Arn": {"Ref": "SchedulerMachine"},
                    "RoleArn": {"Fn::GetAtt": ["ScheduleRole", "Arn"]},
                    "Input": payload,
                    "RetryPolicy": {"MaximumEventAgeInSeconds": 3600, "MaximumRetryAttempts": 10},
                    "DeadLetterConfig": {"Arn": _imported("FailuresQueueArn")},
                },
            },
        },
    }


def _secret(path: str) -> dict:
    """A destination's secret (`path`: `<id>` or `<id>/<part>`), created with a generated value
    that the operator replaces with the real credential; tagged with its destination, which keeps
    it from the job of destinations registered since the deploy."""
    destination, _, part = path.partition("/")
    return {
        "Type": "AWS::SecretsManager::Secret",
        "DeletionPolicy": "RetainExceptOnCreate",   # a credential outlives a stack update that drops its destination
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "Name": {"Fn::Sub": secret_name("${Stage}", destination, part or None)},
            "Description": f"{part or 'credentials'} of destination {destination}: replace the generated value "
                           "(aws secretsmanager put-secret-value) before its first delivery",
            "KmsKeyId": _imported("DataKeyArn"),
            "GenerateSecretString": {"PasswordLength": 32, "ExcludePunctuation": True},
            "Tags": [{"Key": DESTINATION_TAG, "Value": destination}],
        },
    }


DESTINATION_TAG = "audience-relay:destination"   # on a deployed destination's secret and deliver role


def _deliver_role(destination: str | None, reads_secret: bool) -> dict:
    """A deliver job's role: the compute stack's deliver policy (what every deliver job may do) and
    the destination's own secret, by name (`-??????`: the six characters Secrets Manager appends).
    `None`: the job of destinations registered since the deploy, which reads the stage's secrets
    that no deployed destination owns (untagged)."""
    if destination is None:
        secret = {**_statement("ReadRegisteredDestinationsCredentials", ["secretsmanager:GetSecretValue"],
                               [_arn("secretsmanager", f"secret:{secret_name('${Stage}', '*')}")]),
                  "Condition": {"Null": {f"aws:ResourceTag/{DESTINATION_TAG}": "true"}}}
    else:   # its secret and those under it (`<id>/<part>`: Meta's app secret)
        secret = _statement("ReadOwnCredentials", ["secretsmanager:GetSecretValue"],
                            [_arn("secretsmanager", f"secret:{secret_name('${Stage}', destination)}-??????"),
                             _arn("secretsmanager", f"secret:{secret_name('${Stage}', destination)}/*")])
    properties = {
        # A destination's role is named by CloudFormation: the stage's prefix and a 32-character id exceed IAM's 64.
        **({"RoleName": {"Fn::Sub": f"{STAGE}-deliver"}} if destination is None else {}),
        "PermissionsBoundary": {"Ref": "PermissionsBoundaryArn"},
        "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "glue.amazonaws.com"}, "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}}]},
        "ManagedPolicyArns": [_imported("DeliverPolicyArn")],
        **({"Policies": [{"PolicyName": "credentials", "PolicyDocument": {"Version": "2012-10-17", "Statement": [secret]}}]}
           if destination is None or reads_secret else {}),
        **({"Tags": [{"Key": DESTINATION_TAG, "Value": destination}]} if destination else {}),
    }
    return {"Type": "AWS::IAM::Role", "Properties": properties}


def _deliver_job(destination: str | None, role: str) -> dict:
    """The deliver Glue job of one destination (`None`: of those registered since the deploy)."""
    artifacts = _imported("ArtifactsBucket")
    return {
        "Type": "AWS::Glue::Job",
        "Properties": {
            "Name": {"Fn::Sub": f"{STAGE}-deliver" + (f"-{destination}" if destination else "")},
            "Description": f"send destination {destination}'s batches within its limits (jobs/deliver.py)" if destination
                          else "send the batches of a destination registered since the deploy (jobs/deliver.py)",
            "Role": {"Fn::GetAtt": [role, "Arn"]},
            "GlueVersion": {"Ref": "GlueVersion"},
            "WorkerType": {"Ref": "DeliverWorkerType"},
            "NumberOfWorkers": {"Ref": "DeliverWorkers"},
            "Timeout": PLACEHOLDERS.job_timeout_seconds // 60,   # minutes, as the machine's task timeout
            "MaxRetries": 0,   # the machine retries, under a new fencing token
            # One run at a time holds the lease; an attempt fenced out may still be finishing.
            "ExecutionProperty": {"MaxConcurrentRuns": 5 if destination else 50},
            "SecurityConfiguration": _imported("GlueSecurityConfiguration"),
            "Command": {"Name": "glueetl", "PythonVersion": "3",
                        "ScriptLocation": {"Fn::Sub": ["s3://${Bucket}/jobs/deliver.py", {"Bucket": artifacts}]}},
            "DefaultArguments": {
                "--job-language": "python",
                "--additional-python-modules": {"Fn::Sub": ["s3://${Bucket}/${LibraryWheel}", {"Bucket": artifacts}]},
                "--enable-metrics": "true",
                "--TempDir": {"Fn::Sub": ["s3://${Bucket}/glue-temp/", {"Bucket": _imported("WorkBucket")}]},
            },
        },
    }


def _deliver_resources(destinations: list[MachineSpec], secrets: list[str]) -> dict[str, dict]:
    """One deliver job and role per destination, and one for those registered since the deploy."""
    resources = {"RegisteredDeliverRole": _deliver_role(None, True),
                 "RegisteredDeliverJob": _deliver_job(None, "RegisteredDeliverRole")}
    with_secrets = {path.partition("/")[0] for path in secrets}
    for destination in destinations:
        prefix = _logical_id(destination.id).removesuffix("Machine")
        resources[f"{prefix}DeliverRole"] = _deliver_role(destination.id, destination.id in with_secrets)
        resources[f"{prefix}DeliverJob"] = _deliver_job(destination.id, f"{prefix}DeliverRole")
    return resources


SECRET_PART = "[A-Za-z0-9_.]{1,64}"   # no `-`: what follows one in an ARN is Secrets Manager's suffix


def secret_name(stage: str, destination: str, part: str | None = None) -> str:
    """Where a destination's Secrets Manager credentials live (and its other secrets, `part`, such
    as Meta's app secret); its deliver job's role reads only these."""
    return f"audience-relay/{stage}/{destination}" + (f"/{part}" if part else "")


SECRET_SUFFIX = "(-[A-Za-z0-9]{6})?"   # a complete secret ARN ends with six random characters


def own_secret_path(stage: str | None, destination: str, secret_arn: str | None) -> str | None:
    """`<id>` or `<id>/<part>` when the ARN names one of the destination's own secrets of the stage
    (of any stage when `stage` is None), else None."""
    name = secret_arn.split(":secret:", 1)[-1] if secret_arn and ":secret:" in secret_arn else None
    own = re.escape(secret_name(stage, destination)) if stage is not None else f"audience-relay/[^/]+/{re.escape(destination)}"
    found = name and re.fullmatch(own + f"(/{SECRET_PART})?" + SECRET_SUFFIX, name)
    return destination + (found.group(1) or "") if found else None


def names_own_secret(stage: str, destination: str, secret_arn: str | None) -> bool:
    """Whether the ARN names one of the destination's own secrets of the stage (`secret_name`)."""
    return own_secret_path(stage, destination, secret_arn) is not None


def _secret_logical_id(path: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", path)) + "Secret"


PARAMETERS = {
    "Stage": {"Type": "String", "AllowedPattern": "^[a-z][a-z0-9-]{0,15}$"},
    "PermissionsBoundaryArn": {"Type": "String", "AllowedPattern": "^arn:aws[a-z-]*:iam::[0-9]{12}:policy/.+$"},
    "LibraryWheel": {"Type": "String", "AllowedPattern": "^dist/audience_relay-[0-9A-Za-z.+-]+-py3-none-any[.]whl$",
                     "Description": "key of the library wheel in the artifacts bucket, installed by the deliver jobs and on EMR clusters "
                                    "(`audience-relay deploy` uploads it)"},
    "GlueVersion": {"Type": "String", "Default": "5.1", "AllowedValues": ["5.0", "5.1"],
                    "Description": "the deliver jobs' Glue version (the compute stack's for prepare and feedback)"},
    "DeliverWorkerType": {"Type": "String", "Default": "G.1X", "AllowedValues": ["G.1X", "G.2X"]},
    "DeliverWorkers": {"Type": "Number", "Default": 2, "MinValue": 2,
                       "Description": "deliver sends from the driver's threads; executors only read batch files"},
    "IngestCodeKey": {"Type": "String", "AllowedPattern": "^dist/ingest-[0-9a-f]{12}[.]zip$",
                      "Description": "key of the ingest Lambda's zip in the artifacts bucket (`audience-relay deploy` uploads it)"},
    "LambdaCodeKey": {"Type": "String", "AllowedPattern": "^dist/lambda-[0-9a-f]{12}[.]zip$",
                      "Description": "key of the library's Lambda zip (the feedback Lambda's code) in the artifacts bucket"},
    "CatalogCodeKey": {"Type": "String", "AllowedPattern": "^dist/catalog-[0-9a-f]{12}[.]zip$",
                       "Description": "key of the catalog Lambda's zip (the library with psycopg, yoyo and pyarrow) in the artifacts bucket"},
    "ConsentPath": {"Type": "String", "Default": "consent/", "AllowedPattern": "^([A-Za-z0-9=_.-]+/)+$",
                    "Description": "the consent folder in the input bucket that every run reads"},
    "ScheduleExpression": {"Type": "String", "Default": "", "AllowedPattern": "^((cron|rate)[(][^()]+[)])?$",
                           "Description": "cron(...) or rate(...) to start the scheduler on a clock; empty: runs start on S3 completion markers only"},
    "ScheduleTimezone": {"Type": "String", "Default": "UTC"},
    "ScheduledInput": {"Type": "String", "Default": "", "AllowedPattern": "^(s3://[a-z0-9][a-z0-9.-]+/[^\"\\\\]*/)?$",   # no quote or backslash: it goes into JSON
                       "Description": "the folder a scheduled run reads, `{date}` standing for the scheduled day (s3://b/segments/dt={date}/)"},
}


def stack_template(destinations: list[MachineSpec], secrets: list[str] = (), ingest_window: dict | None = None,
                   catalog: bool = False) -> dict:
    """The orchestration stack for these destinations (CloudFormation JSON as a dict).

    `secrets`: the destinations' secrets in Secrets Manager, as `<id>` or `<id>/<part>`.
    `ingest_window`: the config's `ingest` section when files are ingested in windows.
    `catalog`: the stage has the run catalog (its stack's exports are imported).
    """
    definitions = machines(destinations, replace(PLACEHOLDERS, catalog_function="${CatalogFunction}") if catalog else PLACEHOLDERS)
    names = [f"{STAGE}-{name}" for name in definitions]
    resources: dict[str, dict] = {
        "MachinesLogGroup": {
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "RetainExceptOnCreate",
            "UpdateReplacePolicy": "Retain",
            "Properties": {"LogGroupName": {"Fn::Sub": f"/aws/vendedlogs/states/{STAGE}"}, "RetentionInDays": 90,
                           "KmsKeyId": _imported("DataKeyArn")},
        },
        "MachinesRole": _machines_role(names, catalog),
    }
    for name, definition in definitions.items():
        logical_id = _logical_id(name)
        resources[logical_id] = _state_machine(name, definition)
        resources[logical_id.removesuffix("Machine") + "FailedAlarm"] = _failed_executions_alarm(logical_id, name)
    resources.update(_ingest_resources(ingest_window, catalog))
    resources.update(_feedback_resources())
    if catalog:
        resources.update(_catalog_resources())
    resources.update(_schedule_resources())
    resources.update(_deliver_resources(destinations, list(secrets)))
    for path in secrets:
        resources[_secret_logical_id(path)] = _secret(path)
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "audience-relay orchestration (rendered by `audience-relay definitions --stack`): one state machine and "
                       "one deliver job per destination, one of each for destinations registered since, the scheduler and the "
                       "delivery feedback, their log group, roles and failure alarms; the ingest and feedback Lambdas, the "
                       "optional schedule, the destinations' secrets.",
        "Parameters": {k: v for k, v in PARAMETERS.items() if k != "CatalogCodeKey" or catalog},
        "Conditions": {"HasSchedule": {"Fn::Not": [{"Fn::Equals": [{"Ref": "ScheduleExpression"}, ""]}]}},
        "Rules": {"ScheduledRunsNameTheirInput": {
            "RuleCondition": {"Fn::Not": [{"Fn::Equals": [{"Ref": "ScheduleExpression"}, ""]}]},
            "Assertions": [{"Assert": {"Fn::Not": [{"Fn::Equals": [{"Ref": "ScheduledInput"}, ""]}]},
                            "AssertDescription": "a ScheduleExpression needs the ScheduledInput its runs read"}],
        }},
        "Resources": resources,
        "Outputs": {
            "SchedulerArn": {"Value": {"Ref": "SchedulerMachine"},
                             "Export": {"Name": {"Fn::Sub": f"{STAGE}-SchedulerArn"}}},
        },
    }
