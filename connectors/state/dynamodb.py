"""The AWS state store: one DynamoDB table, conditional writes for every invariant.

Item layout (partition key `pk`, sort key `sk`):
- ledger:       pk `RUN#<run_id>`          sk `BATCH#<batch_key>`
- quota:        pk `QUOTA#<quota_key>`     sk `WINDOW#<window>`   attribute `used`
- dead letters: pk `DLQ#<run_id>`          sk `BATCH#<batch_key>`
- audiences:    pk `AUDIENCE#<destination>` sk `<audience>`        attribute `platform_id`
  (the platform's id of an audience deliver created or found by name; kept, never purged)
A run's batches are one query; a quota window is one conditional `ADD`; a delivered batch is
protected by a condition on its state.

Ledger, quota and dead-letter items carry `purge_at` (epoch seconds), the table's TTL attribute
(infra/templates/state.yaml): a run's ledger and dead letters go with its run folder (90 days
after their last change by default), a quota window two days after its last use. Leases
(connectors/state/lease.py, same table) never carry it: deleting one would restart its fencing token.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict

from botocore.exceptions import ClientError

from audience_relay.connectors.aws import dynamodb
from audience_relay.connectors.aws.dynamodb import Key
from audience_relay.connectors.state.lease import HOLDER_CONDITION, OWNER_NAMES
from audience_relay.connectors.state.store import AlreadyDelivered, BatchRecord, BatchState, DeadLetter, Fence, FenceRejected

DAY_SECONDS = 86_400
QUOTA_WINDOW_PURGE_SECONDS = 2 * DAY_SECONDS  # after its last use: past the end of any daily window
RECORD_FIELDS = ("run_id", "destination_id", "audience_id", "op", "batch_number", "checksum", "ids", "state", "attempts", "error", "updated_at")


def create_table(name: str, client=None) -> None:
    """Create the table (on-demand billing) for local runs and tests; infra/ owns it in AWS."""
    client = client or dynamodb.client()
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(TableName=name)


def create_registry_table(name: str, client=None) -> None:
    """The destination registry's table (control/registry.py) for local runs and tests;
    infra/templates/state.yaml makes it in AWS."""
    client = client or dynamodb.client()
    client.create_table(TableName=name, KeySchema=[{"AttributeName": "destination_id", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "destination_id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    client.get_waiter("table_exists").wait(TableName=name)


def _all_items(read) -> list[dict]:
    """Every item of a paginated query or scan (`read(**page_arguments)`)."""
    items, start = [], None
    while True:
        page = read(**({"ExclusiveStartKey": start} if start else {}))
        items.extend(page["Items"])
        start = page.get("LastEvaluatedKey")
        if not start:
            return items


# Cancellation reasons that clear by themselves: another request touched an item of the
# transaction (the lease heartbeat, another worker), or the table was throttled. botocore does
# not retry a cancelled transaction, so the store does, with full-jitter backoff.
TRANSIENT_REASONS = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"})
FENCED_WRITE_ATTEMPTS = 8


class StateWriteCancelled(Exception):
    """A fenced write was cancelled for a reason that is not a condition (after retries, or one
    that retrying cannot clear); the write did not happen."""


def _conditional_failure(error: ClientError) -> bool:
    return error.response["Error"]["Code"] == "ConditionalCheckFailedException"


class DynamoStateStore:
    retry_base_seconds = 0.05   # first backoff of a cancelled fenced write (doubling, capped at 2 s)

    def __init__(self, table_name: str, resource=None, retention_days: int = 90, clock: Callable[[], float] = time.time) -> None:
        self._table = dynamodb.table(table_name, resource)
        self._retention_seconds, self._clock = retention_days * DAY_SECONDS, clock

    def _purge_at(self, after_seconds: int | None = None) -> int:
        return int(self._clock()) + (self._retention_seconds if after_seconds is None else after_seconds)

    @staticmethod
    def _ledger_key(key: str) -> dict:
        return {"pk": f"RUN#{key.split('/', 1)[0]}", "sk": f"BATCH#{key}"}

    def _item(self, record: BatchRecord) -> dict:
        item = {**self._ledger_key(record.batch_key), **{f: getattr(record, f) for f in RECORD_FIELDS}}
        item["state"] = record.state.value
        item["purge_at"] = self._purge_at()
        return {k: v for k, v in item.items() if v is not None}

    @staticmethod
    def _record(item: dict) -> BatchRecord:
        values = {f: item.get(f) for f in RECORD_FIELDS}
        for number in ("batch_number", "ids", "attempts"):
            values[number] = int(values[number])
        values["state"] = BatchState(values["state"])
        return BatchRecord(**values)

    def register(self, records: list[BatchRecord]) -> int:
        added = 0
        for record in records:
            try:
                self._table.put_item(Item=self._item(record), ConditionExpression="attribute_not_exists(pk)")
                added += 1
            except ClientError as error:
                if not _conditional_failure(error):
                    raise
        return added

    def get(self, key: str) -> BatchRecord | None:
        item = self._table.get_item(Key=self._ledger_key(key), ConsistentRead=True).get("Item")
        return self._record(item) if item else None

    def batches(self, run_id: str, destination_id: str | None = None) -> list[BatchRecord]:
        prefix = f"BATCH#{run_id}/" + (f"{destination_id}/" if destination_id else "")
        condition = Key("pk").eq(f"RUN#{run_id}") & Key("sk").begins_with(prefix)
        items = _all_items(lambda **page: self._table.query(KeyConditionExpression=condition, ConsistentRead=True, **page))
        return [self._record(item) for item in items]

    def save(self, record: BatchRecord, fence: Fence | None = None) -> None:
        if fence is not None:
            return self._save_fenced(record, fence)
        try:
            self._table.put_item(
                Item=self._item(record),
                ConditionExpression="attribute_not_exists(pk) OR #state <> :delivered",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":delivered": BatchState.DELIVERED.value},
            )
        except ClientError as error:
            if _conditional_failure(error):
                raise AlreadyDelivered(record.batch_key) from None
            raise

    def consume_quota(self, quota_key: str, window: str, amount: int, limit: int, fence: Fence | None = None) -> bool:
        ceiling = limit - amount
        if ceiling < 0:
            return False
        if fence is not None:
            return self._consume_fenced(quota_key, window, amount, ceiling, fence)
        try:
            self._table.update_item(
                Key={"pk": f"QUOTA#{quota_key}", "sk": f"WINDOW#{window}"},
                UpdateExpression="ADD used :amount SET purge_at = :purge",
                ConditionExpression="attribute_not_exists(used) OR used <= :ceiling",
                ExpressionAttributeValues={":amount": amount, ":ceiling": ceiling, ":purge": self._purge_at(QUOTA_WINDOW_PURGE_SECONDS)},
            )
            return True
        except ClientError as error:
            if _conditional_failure(error):
                return False
            raise

    def check_fence(self, fence: Fence) -> None:
        # The resource's client (de)serializes attribute values, as in `_fenced`.
        item = self._table.meta.client.get_item(TableName=fence.table, Key={"pk": fence.pk, "sk": fence.sk}, ConsistentRead=True).get("Item", {})
        if item.get("owner") != fence.owner or int(item.get("fencing_token", -1)) != fence.token:
            raise FenceRejected(f"lease token {fence.token} of {fence.owner!r} is no longer current")
        left = float(item.get("expires_at", 0)) - self._clock()
        if left < fence.min_remaining_seconds:
            raise FenceRejected(f"lease token {fence.token} of {fence.owner!r} has {left:.0f} s left, under the "
                                f"{fence.min_remaining_seconds:.0f} s a sender needs: its renewals are failing")

    def _fenced(self, fence: Fence, write: dict) -> bool:
        """Run `write` in one transaction with the lease check. True when it landed, False when
        its own condition failed; `FenceRejected` when the lease check failed. Each item's
        cancellation reason is read: conflicts and throttling are retried, not taken for a
        failed condition."""
        check = {"ConditionCheck": {
            "TableName": fence.table,
            "Key": {"pk": fence.pk, "sk": fence.sk},
            "ConditionExpression": HOLDER_CONDITION,
            "ExpressionAttributeNames": OWNER_NAMES,
            "ExpressionAttributeValues": {":owner": fence.owner, ":token": fence.token},
        }}
        for attempt in range(FENCED_WRITE_ATTEMPTS):
            try:
                self._table.meta.client.transact_write_items(TransactItems=[check, write])
                return True
            except ClientError as error:
                if error.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
                reasons = [r.get("Code", "None") for r in error.response.get("CancellationReasons", [])]
            fence_reason, write_reason = (reasons + ["None", "None"])[:2]
            if fence_reason == "ConditionalCheckFailed":
                raise FenceRejected(f"lease token {fence.token} of {fence.owner!r} is no longer current")
            if write_reason == "ConditionalCheckFailed":
                return False
            if not set(reasons) & TRANSIENT_REASONS or set(reasons) - TRANSIENT_REASONS - {"None"}:
                raise StateWriteCancelled(f"transaction cancelled: {reasons} (lease check, write)")
            time.sleep(random.uniform(0, min(2.0, self.retry_base_seconds * 2**attempt)))
        raise StateWriteCancelled(f"transaction cancelled {FENCED_WRITE_ATTEMPTS} times, last: {reasons} (lease check, write)")

    def _save_fenced(self, record: BatchRecord, fence: Fence) -> None:
        put = {"Put": {
            "TableName": self._table.name,
            "Item": self._item(record),
            "ConditionExpression": "attribute_not_exists(pk) OR #state <> :delivered",
            "ExpressionAttributeNames": {"#state": "state"},
            "ExpressionAttributeValues": {":delivered": BatchState.DELIVERED.value},
        }}
        if not self._fenced(fence, put):
            raise AlreadyDelivered(record.batch_key)

    def _consume_fenced(self, quota_key: str, window: str, amount: int, ceiling: int, fence: Fence) -> bool:
        update = {"Update": {
            "TableName": self._table.name,
            "Key": {"pk": f"QUOTA#{quota_key}", "sk": f"WINDOW#{window}"},
            "UpdateExpression": "ADD used :amount SET purge_at = :purge",
            "ConditionExpression": "attribute_not_exists(used) OR used <= :ceiling",
            "ExpressionAttributeValues": {":amount": amount, ":ceiling": ceiling, ":purge": self._purge_at(QUOTA_WINDOW_PURGE_SECONDS)},
        }}
        return self._fenced(fence, update)

    def quota_used(self, quota_key: str, window: str) -> int:
        item = self._table.get_item(Key={"pk": f"QUOTA#{quota_key}", "sk": f"WINDOW#{window}"}, ConsistentRead=True).get("Item")
        return int(item["used"]) if item else 0

    def add_dead_letter(self, letter: DeadLetter) -> None:
        self._table.put_item(Item={"pk": f"DLQ#{letter.run_id}", "sk": f"BATCH#{letter.batch_key}", **asdict(letter),
                                   "purge_at": self._purge_at()})

    def dead_letters(self, run_id: str | None = None) -> list[DeadLetter]:
        fields = DeadLetter.__dataclass_fields__
        if run_id:
            read = lambda **page: self._table.query(KeyConditionExpression=Key("pk").eq(f"DLQ#{run_id}"), ConsistentRead=True, **page)  # noqa: E731
        else:  # dead letters are few: a filtered scan is fine
            read = lambda **page: self._table.scan(FilterExpression="begins_with(pk, :dlq)", ExpressionAttributeValues={":dlq": "DLQ#"}, **page)  # noqa: E731
        items = _all_items(read)
        letters = [DeadLetter(**{k: (int(v) if k == "attempts" else v) for k, v in item.items() if k in fields}) for item in items]
        return sorted(letters, key=lambda letter: letter.batch_key)

    def remove_dead_letter(self, key: str) -> None:
        self._table.delete_item(Key={"pk": f"DLQ#{key.split('/', 1)[0]}", "sk": f"BATCH#{key}"})

    def audience_ids(self, destination_id: str) -> dict[str, str]:
        read = lambda **page: self._table.query(KeyConditionExpression=Key("pk").eq(f"AUDIENCE#{destination_id}"),  # noqa: E731
                                                ConsistentRead=True, **page)
        return {item["sk"]: item["platform_id"] for item in _all_items(read)}

    def record_audience_id(self, destination_id: str, audience: str, platform_id: str) -> str:
        try:
            self._table.put_item(Item={"pk": f"AUDIENCE#{destination_id}", "sk": audience, "platform_id": platform_id},
                                 ConditionExpression="attribute_not_exists(pk)")
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
        return self.audience_ids(destination_id)[audience]
