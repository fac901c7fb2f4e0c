"""A DynamoDB lease lock with heartbeats and fencing tokens, for jobs that share a quota.

One item per lock (`pk = LEASE#<name>`) holds the owner, the lease's expiry and a fencing
token. Acquiring is one conditional update that succeeds when the lock is free, expired or
already ours, and increments the token; the item is never deleted, so tokens only grow. A
holder keeps its lease alive with a heartbeat thread; renewals and releases are conditional
on owner and token, so a paused former holder whose lease was taken over learns it lost the
lock instead of extending someone else's. Writers that must not act after losing the lock
pass their token to `check_fence` (or use it in a transaction's condition).

Expiry uses the clients' clocks (DynamoDB has no server time in conditions): keep leases
much longer than the worst clock skew; the fencing token is what keeps a late writer out.

This module is the one place the lease protocol is written: the item's key, its update and
condition expressions, the fence that state writes carry, and the Step Functions task
arguments the state machines take and release leases with (`asl_acquire`, `asl_release`),
rendered from the same constants.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from botocore.exceptions import ClientError

from audience_relay.connectors.aws import dynamodb
from audience_relay.connectors.state.store import Fence


LEASE_PREFIX = "LEASE#"   # partition keys of leases in the state table (IAM scopes the lease policy to it)
LEASE_SK = "LEASE"
OWNER_NAMES = {"#owner": "owner"}
# Take the lease: free, expired or already ours; the token only grows.
ACQUIRE_UPDATE = "SET #owner = :owner, expires_at = :expires ADD fencing_token :one"
ACQUIRE_CONDITION = "attribute_not_exists(expires_at) OR expires_at < :now OR #owner = :owner"
# Free it, keeping the token; renewals, releases and fenced writes need the holder's owner and token.
RELEASE_UPDATE = "SET expires_at = :zero REMOVE #owner"
HOLDER_CONDITION = "#owner = :owner AND fencing_token = :token"


def lease_key(name: str) -> dict:
    """The lease item's key (`pk`, `sk`) for a lease name (a quota key)."""
    return {"pk": f"{LEASE_PREFIX}{name}", "sk": LEASE_SK}


def lease_fence(table: str, name: str, owner: str, token: int, min_remaining_seconds: float = 0.0) -> Fence:
    """The condition a state-store write carries so it lands only while (owner, token) holds the lease."""
    key = lease_key(name)
    return Fence(table, key["pk"], key["sk"], owner, token, min_remaining_seconds)


def asl_acquire(table: str, name: str, owner: str, expires: str, now: str) -> dict:
    """`dynamodb:updateItem` arguments taking the lease (JSONata expressions for the name, owner,
    expiry and now, evaluated by the state machine); the new token comes back in the result."""
    return {
        "TableName": table,
        "Key": _asl_key(name),
        "UpdateExpression": ACQUIRE_UPDATE,
        "ConditionExpression": ACQUIRE_CONDITION,
        "ExpressionAttributeNames": OWNER_NAMES,
        "ExpressionAttributeValues": {":owner": {"S": owner}, ":expires": {"N": expires}, ":now": {"N": now}, ":one": {"N": "1"}},
        "ReturnValues": "UPDATED_NEW",
    }


def asl_release(table: str, name: str, owner: str) -> dict:
    """`dynamodb:updateItem` arguments freeing the lease if `owner` still holds it (token kept)."""
    return {
        "TableName": table,
        "Key": _asl_key(name),
        "UpdateExpression": RELEASE_UPDATE,
        "ConditionExpression": "#owner = :owner",
        "ExpressionAttributeNames": OWNER_NAMES,
        "ExpressionAttributeValues": {":owner": {"S": owner}, ":zero": {"N": "0"}},
    }


def _asl_key(name: str) -> dict:
    """The key in DynamoDB's typed form; `name` is a JSONata expression."""
    return {"pk": {"S": f"{{% '{LEASE_PREFIX}' & {name} %}}"}, "sk": {"S": LEASE_SK}}


class LeaseHeld(Exception):
    """Someone else holds a live lease."""

    def __init__(self, name: str, owner: str, expires_at: float) -> None:
        super().__init__(f"lock {name!r} is held by {owner!r} until {expires_at:.0f} (epoch seconds)")
        self.name, self.owner, self.expires_at = name, owner, expires_at


class LeaseLost(Exception):
    """Our lease expired and was taken over, or released: stop acting on the shared resource."""


@dataclass(frozen=True)
class Lease:
    name: str
    owner: str
    token: int
    expires_at: float

    def fence(self, table: str) -> Fence:
        """The condition a state-store write carries so it lands only while this lease is current."""
        return lease_fence(table, self.name, self.owner, self.token)


def _conditional_failure(error: ClientError) -> bool:
    return error.response["Error"]["Code"] in ("ConditionalCheckFailedException", "TransactionCanceledException")


class LeaseLock:
    def __init__(self, table_name: str, clock: Callable[[], float] = time.time, resource=None) -> None:
        self._table = dynamodb.table(table_name, resource)
        self._clock = clock

    def acquire(self, name: str, owner: str, lease_seconds: float) -> Lease:
        now = self._clock()
        try:
            item = self._table.update_item(
                Key=lease_key(name),
                UpdateExpression=ACQUIRE_UPDATE,
                ConditionExpression=ACQUIRE_CONDITION,
                ExpressionAttributeNames=OWNER_NAMES,
                ExpressionAttributeValues={":owner": owner, ":expires": _decimal(now + lease_seconds), ":now": _decimal(now), ":one": 1},
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except ClientError as error:
            if not _conditional_failure(error):
                raise
            current = self._table.get_item(Key=lease_key(name), ConsistentRead=True).get("Item", {})
            raise LeaseHeld(name, current.get("owner", "?"), float(current.get("expires_at", 0))) from None
        return Lease(name, owner, int(item["fencing_token"]), float(item["expires_at"]))

    def renew(self, lease: Lease, lease_seconds: float) -> Lease:
        expires = self._clock() + lease_seconds
        self._conditional(lease, "SET expires_at = :expires", {":expires": _decimal(expires)})
        return Lease(lease.name, lease.owner, lease.token, expires)

    def release(self, lease: Lease) -> None:
        """Free the lock now; the fencing token stays, so the next holder's is higher."""
        self._conditional(lease, RELEASE_UPDATE, {":zero": 0})

    def describe(self, name: str) -> dict | None:
        """The lock's item as an operator needs it: owner, token, expiry and whether it is live."""
        item = self._table.get_item(Key=lease_key(name), ConsistentRead=True).get("Item")
        if item is None:
            return None
        expires_at = float(item.get("expires_at", 0))
        return {"name": name, "owner": item.get("owner"), "fencing_token": int(item.get("fencing_token", 0)),
                "expires_at": expires_at, "live": bool(item.get("owner")) and expires_at >= self._clock()}

    def force_release(self, name: str, expected_owner: str | None = None) -> dict:
        """Free the lock whoever holds it (an operator's last resort for a stuck holder).

        The fencing token is kept, so the old holder, if it is still alive, is fenced out: its
        owner no longer matches and the next holder's token is higher. With `expected_owner`
        the release happens only if that owner still holds it.
        """
        condition = "attribute_exists(pk)" + (" AND #owner = :owner" if expected_owner else "")
        values = {":zero": 0, **({":owner": expected_owner} if expected_owner else {})}
        try:
            self._table.update_item(
                Key=lease_key(name), UpdateExpression=RELEASE_UPDATE,
                ConditionExpression=condition, ExpressionAttributeNames=OWNER_NAMES, ExpressionAttributeValues=values,
            )
        except ClientError as error:
            if _conditional_failure(error):
                raise LeaseLost(f"lock {name!r}: no such lock" + (f" held by {expected_owner!r}" if expected_owner else "")) from None
            raise
        return self.describe(name)

    def check_fence(self, lease: Lease) -> None:
        """Raise `LeaseLost` unless `lease` is still the current one (same owner and token, not expired)."""
        item = self._table.get_item(Key=lease_key(lease.name), ConsistentRead=True).get("Item", {})
        if item.get("owner") != lease.owner or int(item.get("fencing_token", -1)) != lease.token or float(item.get("expires_at", 0)) < self._clock():
            raise LeaseLost(f"lock {lease.name!r}: token {lease.token} of {lease.owner!r} is no longer current")

    def _conditional(self, lease: Lease, update: str, values: dict) -> None:
        try:
            self._table.update_item(
                Key=lease_key(lease.name),
                UpdateExpression=update,
                ConditionExpression=HOLDER_CONDITION,
                ExpressionAttributeNames=OWNER_NAMES,
                ExpressionAttributeValues={":owner": lease.owner, ":token": lease.token, **values},
            )
        except ClientError as error:
            if _conditional_failure(error):
                raise LeaseLost(f"lock {lease.name!r}: token {lease.token} of {lease.owner!r} was taken over or released") from None
            raise


def _decimal(value: float):
    from decimal import Decimal

    return Decimal(str(round(value, 3)))


class Heartbeat:
    """Hold a lease for the duration of a `with` block, renewing it every `lease_seconds / 3`.

    If a renewal finds the lease lost, `lost` is set and the work must stop: check it (or call
    `ensure_held`) before each side effect on the shared resource.
    """

    def __init__(self, lock: LeaseLock, name: str, owner: str, lease_seconds: float, held_token: int | None = None) -> None:
        """`held_token`: keep alive a lease someone else acquired and will release (the state
        machine's, passed to a job with its fencing token) instead of acquiring one."""
        self.lock, self.name, self.owner, self.lease_seconds = lock, name, owner, lease_seconds
        self._held_token = held_token
        self.lost = threading.Event()
        self._stop = threading.Event()
        self.lease: Lease | None = None
        self.renewal_failures, self.last_renewal_error = 0, None
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> Heartbeat:
        if self._held_token is None:
            self.lease = self.lock.acquire(self.name, self.owner, self.lease_seconds)
        else:
            try:
                self.lease = self.lock.renew(Lease(self.name, self.owner, self._held_token, 0.0), self.lease_seconds)
            except LeaseLost:
                self.lost.set()  # taken over already: fenced writes will be refused
                return self
        self._thread.start()
        return self

    def _beat(self) -> None:
        wait, in_a_row = self.lease_seconds / 3, 0
        while not self._stop.wait(wait):
            try:
                self.lease = self.lock.renew(self.lease, self.lease_seconds)
                wait, in_a_row = self.lease_seconds / 3, 0
            except LeaseLost:
                self.lost.set()
                return
            except Exception as error:  # noqa: BLE001 - retried soon; senders stop on their own once
                self.renewal_failures += 1   # too little of the lease is left (Fence.min_remaining_seconds)
                self.last_renewal_error = type(error).__name__
                in_a_row += 1
                wait = min(self.lease_seconds / 3, 2.0 ** in_a_row, 60.0)   # 2, 4, 8 ... s, at most a minute

    def ensure_held(self) -> Lease:
        if self.lost.is_set():
            raise LeaseLost(f"lock {self.name!r}: lease of {self.owner!r} was lost")
        return self.lease

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if not self.lost.is_set() and self._held_token is None:
            try:
                self.lock.release(self.lease)
            except LeaseLost:
                pass  # taken over after expiry: nothing of ours to release
