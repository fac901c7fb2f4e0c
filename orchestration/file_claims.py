"""Exactly-once file intake: one conditional write per landed file version (its key and ETag).

S3 delivers events at least once, and SQS delivers messages at least once, so a file can reach
two windows. Before a window judges a file it claims the file's version in the state table
(pk `FILE#s3://bucket/key`, sk `ETAG#<etag>`); the write succeeds for one window only.

States, each change conditioned on the window that holds the claim:
- `claimed`: a window is judging the file;
- `starting` (with `run_id`): the window is about to start that run with it. Written before the
  run starts, so a window that dies or loses the answer of StartExecution leaves a record of
  the run it may have started: whoever finds the claim checks that execution before judging the
  file again (`Window` does), and the file is never prepared twice;
- `started` (with `run_id`) and `quarantined` (with `reason`): final; a later event for the
  same version finds them and does nothing.
A window that fails before its run starts releases its claims, and its messages are retried.
`claimed` and `starting` claims older than `stale_seconds` may be taken over; until then an
event for such a file is retried, not dropped.

Claims carry `purge_at`, the table's TTL attribute: 90 days, far past any redelivery.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum

from botocore.exceptions import ClientError

from audience_relay.connectors.aws import dynamodb
from audience_relay.orchestration.file_checks import LandedFile

PURGE_SECONDS = 90 * 86_400
CONDITION_FAILED = "ConditionalCheckFailedException"


class Claim(Enum):
    OURS = "ours"            # this window judges the file
    DONE = "done"            # an earlier window settled this version: nothing to do
    HELD = "held"            # another live window holds it: retry the message later
    STARTING = "starting"    # a stale window was starting `run_id` with it: check that run first


@dataclass(frozen=True)
class Found:
    claim: Claim
    run_id: str | None = None
    settled: dict | None = None   # DONE: the claim as an earlier window settled it


class ClaimLost(Exception):
    """Another window took the claim over (ours went stale): this window must leave the file alone."""


class FileClaims:
    def __init__(self, table_name: str, window_id: str, stale_seconds: int, resource=None, clock=time.time) -> None:
        self._table = dynamodb.table(table_name, resource)
        self._window = window_id
        self._stale_seconds = stale_seconds
        self._clock = clock

    @staticmethod
    def _key(landed: LandedFile) -> dict:
        return {"pk": f"FILE#{landed.uri}", "sk": f"ETAG#{landed.etag}"}

    def _claim_item(self, landed: LandedFile, now: int) -> dict:
        return {**self._key(landed), "state": "claimed", "window": self._window, "claimed_at": now,
                "size": landed.size, "purge_at": now + PURGE_SECONDS}

    def claim(self, landed: LandedFile) -> Found:
        now = int(self._clock())
        try:
            self._table.put_item(
                Item=self._claim_item(landed, now),
                ConditionExpression="attribute_not_exists(pk) OR (#state = :claimed AND claimed_at < :stale)",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":claimed": "claimed", ":stale": now - self._stale_seconds},
            )
            return Found(Claim.OURS)
        except ClientError as error:
            if error.response["Error"]["Code"] != CONDITION_FAILED:
                raise
        held = self.outcome(landed)
        if held is None:   # released between the write and the read: judge it next time
            return Found(Claim.HELD)
        if held["state"] == "starting" and held["claimed_at"] < now - self._stale_seconds:
            return Found(Claim.STARTING, held["run_id"])
        if held["state"] in ("claimed", "starting"):
            return Found(Claim.HELD)
        return Found(Claim.DONE, held.get("run_id"), held)

    def take_over(self, landed: LandedFile, run_id: str) -> bool:
        """Claim a stale `starting` claim whose run never started; False if someone else moved first."""
        now = int(self._clock())
        return self._conditional(lambda: self._table.put_item(
            Item=self._claim_item(landed, now),
            ConditionExpression="#state = :starting AND run_id = :run AND claimed_at < :stale",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={":starting": "starting", ":run": run_id, ":stale": now - self._stale_seconds},
        ))

    def confirm_started(self, landed: LandedFile, run_id: str) -> dict | None:
        """A stale `starting` claim whose run did start: record it as `started` (for any window);
        the claim as now stored, or None if someone else moved first."""
        try:
            return self._table.update_item(
                Key=self._key(landed), UpdateExpression="SET #state = :started",
                ConditionExpression="#state = :starting AND run_id = :run",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":started": "started", ":starting": "starting", ":run": run_id},
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except ClientError as error:
            if error.response["Error"]["Code"] != CONDITION_FAILED:
                raise
            return None

    def settle(self, landed: LandedFile, state: str, **details: str) -> None:
        """Move this window's claim to `state` (`starting`, `started`, `quarantined`); ClaimLost if
        the claim is no longer this window's."""
        names = {"#state": "state", "#window": "window", **{f"#{k}": k for k in details}}
        values = {":state": state, ":window": self._window, **{f":{k}": v for k, v in details.items()}}
        sets = ", ".join(["#state = :state", *[f"#{k} = :{k}" for k in details]])
        if not self._conditional(lambda: self._table.update_item(
                Key=self._key(landed), UpdateExpression=f"SET {sets}", ConditionExpression="#window = :window",
                ExpressionAttributeNames=names, ExpressionAttributeValues=values)):
            raise ClaimLost(f"{landed.uri} ({landed.etag}) is now another window's")

    def release(self, landed: LandedFile) -> None:
        """Give back a claim this window holds and has not settled for good (its run did not start)."""
        self._conditional(lambda: self._table.delete_item(
            Key=self._key(landed), ConditionExpression="#window = :window AND #state IN (:claimed, :starting)",
            ExpressionAttributeNames={"#window": "window", "#state": "state"},
            ExpressionAttributeValues={":window": self._window, ":claimed": "claimed", ":starting": "starting"},
        ))

    def outcome(self, landed: LandedFile) -> dict | None:
        """The claim as stored."""
        return self._table.get_item(Key=self._key(landed), ConsistentRead=True).get("Item")

    @staticmethod
    def _conditional(write) -> bool:
        try:
            write()
            return True
        except ClientError as error:
            if error.response["Error"]["Code"] != CONDITION_FAILED:
                raise
            return False
