"""Storage on S3 (moto server): what S3 refuses is an error, never a silent success."""
import uuid

import boto3
import pytest

from audience_relay.pipeline import storage

pytestmark = pytest.mark.integration


def test_a_folder_delete_that_s3_refuses_for_some_keys_fails_naming_them(moto_server):
    """DeleteObjects answers 200 with per-key errors (AccessDenied when the role may not delete):
    the committed snapshot copies it should have pruned would stay forever, unnoticed."""
    s3, bucket = boto3.client("s3"), f"storage-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    for key in ("snapshots/d/r1/members/part-0", "snapshots/d/r1/members/part-1"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")

    def refuse_one(parsed, **_):   # as S3 answers a role without s3:DeleteObject on that key
        parsed["Errors"] = [{"Key": "snapshots/d/r1/members/part-1", "Code": "AccessDenied", "Message": "Access Denied"}]

    session = boto3._get_default_session()._session
    session.register("after-call.s3.DeleteObjects", refuse_one)
    try:
        with pytest.raises(PermissionError, match=r"s3://storage-\w+/snapshots/d/r1/members/part-1: AccessDenied"):
            storage.delete_folder(f"s3://{bucket}/snapshots/d/r1/")
    finally:
        session.unregister("after-call.s3.DeleteObjects", refuse_one)
