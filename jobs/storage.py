"""Small-object I/O (manifests, snapshot pointers) on local paths and `s3://` URIs.

Spark writes the big data; this module only reads and writes the JSON that says what the big
data is. Local writes are atomic (temporary file, then rename); an S3 PUT is atomic already.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import boto3


def is_s3(uri: str) -> bool:
    return uri.startswith(("s3://", "s3a://"))


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def _bucket_key(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def _s3():
    # AWS_ENDPOINT_URL (honoured by boto3) points tests at a local moto server.
    return boto3.client("s3")


def read_text(uri: str) -> str | None:
    """The object's text, or None when it does not exist."""
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        try:
            return _s3().get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
        except _s3().exceptions.NoSuchKey:
            return None
    path = Path(uri)
    return path.read_text(encoding="utf-8") if path.exists() else None


def write_text(uri: str, text: str) -> None:
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        _s3().put_object(Bucket=bucket, Key=key, Body=text.encode("utf-8"))
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)


def exists(uri: str) -> bool:
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        listing = _s3().list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        return listing.get("KeyCount", 0) > 0
    return Path(uri).exists()
