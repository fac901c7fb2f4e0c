"""Job arguments as the CLI and spark-submit pass them, and as Glue does, through awsglue's own parser.

A Glue run hands the script `sys.argv`: the script's path, then Glue's arguments and the job's
(`--NAME value` pairs from the job definition and the run) in an order we do not choose.
`awsglue.utils.getResolvedOptions` (awsglue-local, the library Glue's own is published as) reads
them; these tests call it for real on argument lists shaped like Glue's.
"""
import argparse
import sys

import pytest
from awsglue.utils import GlueArgumentError, getResolvedOptions   # the real parser, installed (never skipped)

from audience_relay.jobs import deliver, feedback, prepare
from audience_relay.pipeline.args import parse_job_args

# What Glue adds to every run of a job (names from Glue's "Special parameters" page and awsglue's Job).
GLUE = ["--JOB_ID", "j_0123", "--JOB_RUN_ID", "jr_4567", "--JOB_NAME", "audience-relay-prod-prepare",
        "--job-bookmark-option", "job-bookmark-disable", "--TempDir", "s3://work/glue-temp/", "--enable-metrics", "true",
        "--job-language", "python"]
SCRIPT = "/tmp/glue-scripts/job.py"

# Per job: its options as the state machine passes them, and the value each must parse to.
JOBS = {
    "prepare": (prepare.add_arguments, [
        ("--input", "s3://lake/day/", "input", "s3://lake/day/"),
        ("--consent", "s3://lake/consent/", "consent", "s3://lake/consent/"),
        ("--out", "s3://work", "out", "s3://work"),
        ("--config", "s3://artifacts/config/destinations.yaml", "config", "s3://artifacts/config/destinations.yaml"),
        ("--run_id", "20261204T010203Z", "run_id", "20261204T010203Z"),
        ("--destinations", "google_dm", "destinations", "google_dm"),
        ("--if_prepared", "skip", "if_prepared", "skip"),
        ("--sub_buckets", "64", "sub_buckets", 64),
    ]),
    "deliver": (deliver.add_arguments, [
        ("--out", "s3://work", "out", "s3://work"),
        ("--run_id", "r7", "run_id", "r7"),
        ("--config", "s3://artifacts/config/destinations.yaml", "config", "s3://artifacts/config/destinations.yaml"),
        ("--destination", "google_dm", "destination", ["google_dm"]),
        ("--state", "dynamodb://audience-relay-state", "state", "dynamodb://audience-relay-state"),
        ("--deferred_exit_code", "0", "deferred_exit_code", 0),
        ("--failed_exit_code", "0", "failed_exit_code", 0),
        ("--fence_owner", "arn:aws:states:us-east-1:123456789012:execution:m:e", "fence_owner",
         "arn:aws:states:us-east-1:123456789012:execution:m:e"),
        ("--fence_token", "-3", "fence_token", -3),
        ("--lease_seconds", "14400", "lease_seconds", 14400.0),
    ]),
    "feedback": (feedback.add_arguments, [
        ("--out", "s3://work", "out", "s3://work"),
        ("--run", "r7", "run", "r7"),
        ("--config", "s3://artifacts/config/destinations.yaml", "config", "s3://artifacts/config/destinations.yaml"),
        ("--ask", "none", "ask", "none"),
    ]),
}


MODULES = {"prepare": (prepare, "command"), "deliver": (deliver, "command"), "feedback": (feedback, "run_feedback")}


def _parser(job: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=job)
    JOBS[job][0](parser)
    return parser


def _run_as_glue_does(job: str, argv: list[str], monkeypatch) -> argparse.Namespace:
    """`python <job>.py` as Glue starts it: the job's main() reads sys.argv itself."""
    module, command = MODULES[job]
    seen = []
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(module, command, lambda args: seen.append(args) or 0)
    assert module.main() == 0
    return seen[0]


def _own(job: str) -> list[str]:
    return [item for option, value, _, _ in JOBS[job][1] for item in (option, value)]


def _interleaved(job: str) -> list[str]:
    own, glue = _own(job), GLUE
    pairs = [own[i:i + 2] for i in range(0, len(own), 2)] + [glue[i:i + 2] for i in range(0, len(glue), 2)]
    mixed = [pair for two in zip(pairs[::2], pairs[1::2]) for pair in two] + ([pairs[-1]] if len(pairs) % 2 else [])
    return [item for pair in mixed for item in pair]


SHAPES = {
    "glue's arguments first": lambda job: [SCRIPT, *GLUE, *_own(job)],
    "the job's arguments first": lambda job: [SCRIPT, *_own(job), *GLUE],
    "interleaved": lambda job: [SCRIPT, *_interleaved(job)],
}


def _assert_values(args: argparse.Namespace, job: str) -> None:
    assert {dest: getattr(args, dest) for _, _, dest, _ in JOBS[job][1]} == {dest: value for _, _, dest, value in JOBS[job][1]}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("job", JOBS)
def test_a_glue_run_gets_every_job_option_whatever_the_order(job, shape, monkeypatch):
    argv = SHAPES[shape](job)
    assert sorted(argv[1:]) == sorted([*GLUE, *_own(job)])   # the same arguments, in another order
    _assert_values(_run_as_glue_does(job, argv, monkeypatch), job)


@pytest.mark.parametrize("job", JOBS)
def test_a_value_that_starts_with_a_dash_is_the_options_value(job, monkeypatch):
    argv = [SCRIPT, *GLUE, *_own(job), "--config", "-config.yaml", "--out", "--out-of-band"]
    args = _run_as_glue_does(job, argv, monkeypatch)
    assert (args.config, args.out) == ("-config.yaml", "--out-of-band")


@pytest.mark.parametrize("job", JOBS)
def test_an_option_given_twice_takes_its_last_value_as_glues_parser_does(job, monkeypatch):
    args = _run_as_glue_does(job, [SCRIPT, "--out", "s3://first", *GLUE, *_own(job)], monkeypatch)
    _assert_values(args, job)


def test_cli_style_arguments_need_no_glue():
    args = parse_job_args(_parser("prepare"), ["prepare", "--input", "in", "--out", "o", "--run-id", "r1", "--format", "csv"])
    assert (args.input, args.out, args.run_id, args.input_format) == ("in", "o", "r1", "csv")


def test_a_missing_required_option_under_glue_is_named():
    argv = [SCRIPT, *GLUE, "--out", "s3://work", "--run_id", "r1"]
    with pytest.raises(SystemExit):
        parse_job_args(_parser("feedback"), argv)


def test_the_names_the_definitions_refuse_are_those_awsglue_reserves():
    from awsglue.job import Job

    from audience_relay.orchestration.machines.states import GLUE_RESERVED_ARGUMENTS

    reserved = {Job.continuation_options()[0], Job.job_bookmark_options()[0], *Job.job_bookmark_range_options(), *Job.id_params(),
                Job.encryption_type_options()[0], "--TempDir", "--RedshiftTempDir"}
    assert GLUE_RESERVED_ARGUMENTS == reserved
    for name in sorted(reserved - {"--JOB_NAME", "--TempDir", "--RedshiftTempDir"}):   # JOB_NAME is Glue's to give
        with pytest.raises((RuntimeError, argparse.ArgumentError, GlueArgumentError)):
            getResolvedOptions([SCRIPT, *GLUE, name, "x"], [name[2:]])
    # The temporary folders are Glue's: RedshiftTempDir is overwritten with TempDir's value.
    assert getResolvedOptions([SCRIPT, *GLUE, "--RedshiftTempDir", "x"], ["RedshiftTempDir"])["RedshiftTempDir"] == "s3://work/glue-temp/"


def test_a_definition_giving_a_glue_job_a_reserved_argument_is_refused_naming_it():
    from audience_relay.orchestration.machines import states

    with pytest.raises(states.ReservedGlueArgument, match=r"audience-relay-prepare \(Prepare\): arguments \['--TempDir'\]"):
        states.glue_task("audience-relay-prepare", {"--out": "s3://work", "--TempDir": "s3://mine/"}, "Prepare", "Next", 60)
    assert states.glue_task("audience-relay-prepare", {"--out": "s3://work"}, "Prepare", "Next", 60)["Arguments"]["Arguments"] == {
        "--out": "s3://work"}
