"""Fenced ledger and quota writes on DynamoDB (moto server) when the transaction is cancelled.

Real DynamoDB cancels a transaction for reasons other than a failed condition: a conflict with
another request on one of its items (the heartbeat updates the lease item every worker's
transaction checks), throttling. moto serializes its calls, so the cancellations are injected
at the SDK: a botocore `before-call` hook answers TransactWriteItems with the error DynamoDB
sends, with one reason per item, the fence's check first.
"""
import uuid

import boto3
import pytest

from audience_relay.connectors.state import dynamodb
from audience_relay.connectors.state.dynamodb import DynamoStateStore, create_table
from audience_relay.connectors.state.store import AlreadyDelivered, BatchRecord, BatchState, FenceRejected
from audience_relay.connectors.state.lease import LeaseLock


def _cancelled(codes: list[str]) -> tuple[object, dict]:
    """The parsed answer DynamoDB gives a cancelled TransactWriteItems (HTTP 400)."""
    reasons = [{"Code": code, **({"Message": f"{code} (injected)"} if code != "None" else {})} for code in codes]
    message = f"Transaction cancelled, please refer cancellation reasons for specific reasons [{', '.join(codes)}]"
    http = type("Response", (), {"status_code": 400, "headers": {}})()
    return http, {"Error": {"Code": "TransactionCanceledException", "Message": message}, "CancellationReasons": reasons,
                  "ResponseMetadata": {"HTTPStatusCode": 400}}


class Cancellations:
    """Cancel the next TransactWriteItems calls with these reason lists; later calls go through."""

    def __init__(self, client) -> None:
        self.planned: list[list[str]] = []
        self.calls = 0
        client.meta.events.register("before-call.dynamodb.TransactWriteItems", self._answer)

    def _answer(self, **_) -> tuple | None:
        self.calls += 1
        return _cancelled(self.planned.pop(0)) if self.planned else None


@pytest.fixture
def fenced(moto_server):
    name = f"audience-relay-cancel-{uuid.uuid4().hex[:8]}"
    create_table(name)
    resource = boto3.resource("dynamodb")
    store = DynamoStateStore(name, resource=resource)
    store.retry_base_seconds = 0.001
    lease = LeaseLock(name).acquire("google_ads_project", "execution-1", 600)
    return store, lease.fence(name), Cancellations(resource.meta.client)


def record(number=0):
    return BatchRecord("r1", "google_dm", "aud", "add", number, "ab" * 32, 100)


@pytest.mark.parametrize("reason", ["TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"])
def test_a_ledger_write_cancelled_by_a_conflict_or_throttling_is_retried_and_lands(fenced, reason):
    store, fence, cancel = fenced
    store.register([record()])
    cancel.planned = [["None", reason], [reason, "None"]]  # the reason may sit on either item
    store.save(record().moved_to(BatchState.DELIVERED, attempts=1), fence)
    assert cancel.calls == 3 and store.get(record().batch_key).state is BatchState.DELIVERED


@pytest.mark.parametrize("reason", ["TransactionConflict", "ThrottlingError"])
def test_a_quota_write_cancelled_by_a_conflict_or_throttling_is_retried_not_read_as_exhausted(fenced, reason):
    store, fence, cancel = fenced
    cancel.planned = [["None", reason], ["None", reason]]
    assert store.consume_quota("google_ads_project", "2026-12-03", 5, 100, fence) is True
    assert store.quota_used("google_ads_project", "2026-12-03") == 5


def test_the_writes_own_condition_still_means_delivered_or_exhausted(fenced):
    store, fence, cancel = fenced
    store.register([record()])
    store.save(record().moved_to(BatchState.DELIVERED, attempts=1), fence)
    with pytest.raises(AlreadyDelivered):   # the real condition, answered by the server
        store.save(record().moved_to(BatchState.FAILED, attempts=2, error="late"), fence)
    assert store.consume_quota("google_ads_project", "2026-12-03", 90, 100, fence) is True
    assert store.consume_quota("google_ads_project", "2026-12-03", 20, 100, fence) is False


def test_a_failed_fence_check_is_fence_rejected_whatever_the_write_says(fenced):
    store, fence, cancel = fenced
    cancel.planned = [["ConditionalCheckFailed", "None"]]
    with pytest.raises(FenceRejected):
        store.save(record().moved_to(BatchState.DELIVERED, attempts=1), fence)


def test_conflicts_that_never_clear_are_raised_not_read_as_delivered(fenced):
    store, fence, cancel = fenced
    store.register([record()])
    cancel.planned = [["None", "TransactionConflict"]] * 50
    with pytest.raises(dynamodb.StateWriteCancelled, match="TransactionConflict"):
        store.save(record().moved_to(BatchState.DELIVERED, attempts=1), fence)
    assert store.get(record().batch_key).state is BatchState.PENDING


def test_an_unexpected_reason_is_raised_with_the_reasons(fenced):
    store, fence, cancel = fenced
    cancel.planned = [["None", "ValidationError"]]
    with pytest.raises(dynamodb.StateWriteCancelled, match="ValidationError"):
        store.consume_quota("google_ads_project", "2026-12-03", 5, 100, fence)
    assert cancel.calls == 1   # not retried: it will not clear by itself
