"""Exactly-once file intake: one conditional write per landed file version (its key and ETag).

S3 delivers events at least once, and SQS delivers messages at least once, so a file can reach
two windows. Before a window judges a file it claims the file's version in the state table
(pk `FILE#s3://bucket/key`, sk `ETAG#<etag>`); the write succeeds for one window only. The
claim then records the outcome (`started` with the run id, `quarantined`, `superseded`), and a
later event for the same version finds it and does nothing. A window that fails before its run
starts releases its claims, and its messages are retried. A window that dies holding claims
(a Lambda timeout) leaves them `claimed`: after `stale_seconds` another window may take them
over, and until then an event for such a file is retried, not dropped.

Claims carry `purge_at`, the table's TTL attribute: 90 days, far past any redelivery.
"""
from __future__ import annotations

import time
from enum import Enum

import boto3
from botocore.exceptions import ClientError

from orchestration.file_checks import LandedFile

PURGE_SECONDS = 90 * 86_400


class Claim(Enum):
    OURS = "ours"            # this window judges the file
    DONE = "done"            # an earlier window judged this version: nothing to do
    HELD = "held"            # another live window holds it: retry the message later


class FileClaims:
    def __init__(self, table_name: str, window_id: str, stale_seconds: int, resource=None, clock=time.time) -> None:
        self._table = (resource or boto3.resource("dynamodb")).Table(table_name)
        self._window = window_id
        self._stale_seconds = stale_seconds
        self._clock = clock

    @staticmethod
    def _key(landed: LandedFile) -> dict:
        return {"pk": f"FILE#{landed.uri}", "sk": f"ETAG#{landed.etag}"}

    def claim(self, landed: LandedFile) -> Claim:
        now = int(self._clock())
        try:
            self._table.put_item(
                Item={**self._key(landed), "state": "claimed", "window": self._window, "claimed_at": now,
                      "size": landed.size, "purge_at": now + PURGE_SECONDS},
                ConditionExpression="attribute_not_exists(pk) OR (#state = :claimed AND claimed_at < :stale)",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":claimed": "claimed", ":stale": now - self._stale_seconds},
            )
            return Claim.OURS
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
        held = self._table.get_item(Key=self._key(landed), ConsistentRead=True).get("Item")
        if held is None:   # released between the write and the read: judge it next time
            return Claim.HELD
        return Claim.HELD if held["state"] == "claimed" else Claim.DONE

    def settle(self, landed: LandedFile, state: str, **details: str) -> None:
        """Record this window's outcome for a file it claimed (`started`, `quarantined`, `superseded`)."""
        names = {"#state": "state", **{f"#{k}": k for k in details}}
        values = {":state": state, ":window": self._window, **{f":{k}": v for k, v in details.items()}}
        sets = ", ".join(["#state = :state", *[f"#{k} = :{k}" for k in details]])
        self._table.update_item(
            Key=self._key(landed), UpdateExpression=f"SET {sets}",
            ConditionExpression="#window = :window",   # a window that lost its stale claim records nothing
            ExpressionAttributeNames={**names, "#window": "window"}, ExpressionAttributeValues=values,
        )

    def release(self, landed: LandedFile) -> None:
        """Give a claimed file back (this window failed before its run started)."""
        try:
            self._table.delete_item(
                Key=self._key(landed), ConditionExpression="#window = :window AND #state = :claimed",
                ExpressionAttributeNames={"#window": "window", "#state": "state"},
                ExpressionAttributeValues={":window": self._window, ":claimed": "claimed"},
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def outcome(self, landed: LandedFile) -> dict | None:
        """The claim as stored (for reports and tests)."""
        return self._table.get_item(Key=self._key(landed), ConsistentRead=True).get("Item")
