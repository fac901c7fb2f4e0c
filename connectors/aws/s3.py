"""Amazon S3: the object listing every layer pages through, and the multipart setting of uploads."""
from __future__ import annotations

from collections.abc import Iterator

from boto3.s3.transfer import TransferConfig

from audience_relay.connectors.aws.clients import client as make_client

# Objects above 8 MiB go up in 8 MiB parts (a batch file of 500,000 hashed ids is about 20 MiB).
MULTIPART = TransferConfig(multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024)


def client():
    return make_client("s3")


def objects(bucket: str, prefix: str, s3=None) -> Iterator[dict]:
    """Every object whose key starts with `prefix` (`Key`, `Size`, ...), a page of 1,000 per request."""
    for page in (s3 or client()).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])
