"""The one place boto3 clients and resources are made. Region and credentials come from the
environment as boto3 finds them; AWS_ENDPOINT_URL (honoured by boto3) points every client at a
local moto server in tests and in `audience-relay demo`."""
from __future__ import annotations

import boto3


def client(service: str, **options):
    """A boto3 client of `service`; `options` as boto3 takes them (region_name, endpoint_url, config)."""
    return boto3.client(service, **options)


def resource(service: str, **options):
    """A boto3 resource of `service` (DynamoDB's Table interface)."""
    return boto3.resource(service, **options)
