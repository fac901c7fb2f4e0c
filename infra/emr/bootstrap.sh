#!/bin/bash
# EMR bootstrap action (every node, before Spark starts): Python 3.11 and the audience-relay
# wheel with its dependencies, so a spark-submit step runs jobs/prepare.py as Glue 5.1 does.
# EMR 7's own python3 is 3.9; the cluster's spark-env points PYSPARK_PYTHON at 3.11.
# Argument: the wheel's S3 URI (the wheel the compute stack names). pyspark is not installed:
# the wheel lists it only as an extra, and EMR brings its own Spark.
set -euo pipefail
wheel_uri=${1:?usage: bootstrap.sh s3://bucket/dist/audience_relay-VERSION-py3-none-any.whl}
work=$(mktemp -d)
sudo dnf install -y -q python3.11 python3.11-pip
aws s3 cp --only-show-errors "$wheel_uri" "$work/"
sudo python3.11 -m pip install --quiet "$work/$(basename "$wheel_uri")"
rm -rf "$work"
