import gzip
import random

import boto3
import pytest

from audience_relay.connectors.delivery import deliver_batches
from audience_relay.connectors.destinations.s3.client import S3Destination
from audience_relay.connectors.rate_limit import TokenBucket
from audience_relay.connectors.retry import RetryPolicy
from audience_relay.connectors.secrets import SecretUnavailable, resolve_secret
from audience_relay.connectors.state.sqlite import SqliteStateStore
from tests.integration.test_http_destinations import make_batches

pytestmark = pytest.mark.integration


def test_batches_become_encrypted_objects_once_each(moto_server, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="s3-connector-test")
    work = make_batches(4, size=30)
    store = SqliteStateStore(tmp_path / "s.db")
    destination = S3Destination("s3-connector-test", prefix="audiences/in")
    for _ in range(2):  # the second run finds everything delivered
        deliver_batches(destination, work, store, TokenBucket(100), None, RetryPolicy(), random.Random(0))
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="s3-connector-test")["Contents"])
    assert len(keys) == 4 and all(k.startswith("audiences/in/r1/dest/aud_1/") and k.endswith(".csv.gz") for k in keys)
    head = s3.head_object(Bucket="s3-connector-test", Key=keys[0], ChecksumMode="ENABLED")
    assert head["ServerSideEncryption"] == "AES256" and head.get("ChecksumSHA256")
    lines = gzip.decompress(s3.get_object(Bucket="s3-connector-test", Key=keys[0])["Body"].read()).decode().splitlines()
    assert lines[0] == "id_type,id" and len(lines) == 31


def test_secrets_resolve_from_environment_and_secrets_manager(moto_server, monkeypatch):
    monkeypatch.setenv("META_ACCESS_TOKEN", "token-from-env")
    assert resolve_secret(env="META_ACCESS_TOKEN") == "token-from-env"
    arn = boto3.client("secretsmanager").create_secret(Name="audience-relay/secrets-test", SecretString="s3cr3t")["ARN"]
    assert resolve_secret(secret_arn=arn) == "s3cr3t"
    with pytest.raises(SecretUnavailable, match="MISSING_VAR"):
        resolve_secret(env="MISSING_VAR")
