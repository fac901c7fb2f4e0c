import argparse

from jobs.args import parse_job_args
from jobs.prepare import add_arguments


def parser():
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p


def test_cli_style_arguments():
    args = parse_job_args(parser(), ["--input", "in", "--out", "o", "--run-id", "r1", "--format", "csv"])
    assert (args.input, args.out, args.run_id, args.input_format) == ("in", "o", "r1", "csv")


def test_glue_run_arguments_are_resolved_and_glue_extras_ignored():
    argv = [
        "--JOB_ID", "j_1", "--JOB_RUN_ID", "jr_1", "--JOB_NAME", "prepare", "--TempDir", "s3://tmp/",
        "--job-bookmark-option", "job-bookmark-disable", "--input", "s3://lake/in", "--out", "s3://work",
        "--run_id", "r7", "--sub_buckets", "64",
    ]
    args = parse_job_args(parser(), argv)
    assert (args.input, args.out, args.run_id, args.sub_buckets) == ("s3://lake/in", "s3://work", "r7", 64)
