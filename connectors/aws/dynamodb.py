"""Amazon DynamoDB: the tables the state store, the lease, the file claims and the destination
registry keep their items in."""
from __future__ import annotations

from boto3.dynamodb.conditions import Key

from audience_relay.connectors.aws.clients import client as make_client
from audience_relay.connectors.aws.clients import resource as make_resource

__all__ = ["Key", "client", "table"]


def client():
    """The low-level client (typed attribute values: `{"S": ...}`), for table creation and the registry."""
    return make_client("dynamodb")


def table(name: str, resource=None):
    """The table by name, through `resource` (a test's) or a new DynamoDB resource."""
    return (resource or make_resource("dynamodb")).Table(name)
