"""S3 file destination: one object per batch, multipart above 8 MiB, SHA-256 checksums, SSE.

Object keys are deterministic (run, audience, op, batch number, checksum), so a retry or a
resumed run overwrites the object with identical bytes instead of adding a second copy.
"""
from __future__ import annotations

import io

from botocore.exceptions import BotoCoreError, ClientError, ConnectionError as BotoConnectionError

from audience_relay.connectors.aws import s3
from audience_relay.connectors.destination import Batch, Destination, Receipt
from audience_relay.connectors.files import UnsafeFileName, batch_file_bytes, batch_file_name
from audience_relay.connectors.retry import Failure, FailureKind

RETRYABLE_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed"}


class S3Destination(Destination):
    def __init__(self, bucket: str, prefix: str = "", kms_key_id: str | None = None, client=None) -> None:
        self.bucket, self.prefix, self.kms_key_id = bucket, prefix.strip("/"), kms_key_id
        self._client = client

    def open(self) -> None:
        self._client = self._client or s3.client()

    def key(self, batch: Batch) -> str:
        return "/".join(p for p in (self.prefix, batch_file_name(batch)) if p)

    def send(self, batch: Batch) -> Receipt:
        encryption = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id} if self.kms_key_id else {"ServerSideEncryption": "AES256"}
        self._client.upload_fileobj(
            io.BytesIO(batch_file_bytes(batch)), self.bucket, self.key(batch),
            ExtraArgs={"ChecksumAlgorithm": "SHA256", "ContentType": "text/csv", "ContentEncoding": "gzip", **encryption},
            Config=s3.MULTIPART,
        )
        return Receipt(len(batch.members), f"s3://{self.bucket}/{self.key(batch)}")

    def classify(self, error: Exception) -> Failure:
        if isinstance(error, UnsafeFileName):
            return Failure(FailureKind.PERMANENT, str(error))
        if isinstance(error, ClientError):
            code = error.response.get("Error", {}).get("Code", "")
            kind = FailureKind.RATE_LIMITED if code == "SlowDown" else FailureKind.RETRYABLE if code in RETRYABLE_CODES else FailureKind.PERMANENT
            return Failure(kind, f"S3 {code}")
        if isinstance(error, (BotoConnectionError, BotoCoreError)):
            return Failure(FailureKind.RETRYABLE, f"S3 {type(error).__name__}")
        return Failure(FailureKind.PERMANENT, f"unexpected {type(error).__name__}")
