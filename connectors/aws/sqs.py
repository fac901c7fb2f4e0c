"""Amazon SQS: the queues windows of landed files are read from and dead letters are sent to."""
from __future__ import annotations

from audience_relay.connectors.aws.clients import client as make_client


def client():
    return make_client("sqs")
