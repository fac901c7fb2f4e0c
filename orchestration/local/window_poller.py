"""Gather windows from the ingest queue as Lambda's SQS event source mapping does, without Lambda.

The mapping polls the queue and invokes the function with up to `BatchSize` messages, once it
has that many or `MaximumBatchingWindowInSeconds` has passed since it started gathering; the
messages the function does not list in `batchItemFailures` are deleted, the others become
visible again after the queue's visibility timeout (and go to the dead-letter queue after its
maxReceiveCount). `audience-relay ingest` and the tests run windows with this loop, so the
handler sees what it sees in AWS.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

SQS_MAX_MESSAGES = 10      # per ReceiveMessage call
SQS_MAX_WAIT_SECONDS = 20  # long polling


@dataclass(frozen=True)
class WindowResult:
    messages: int
    retried: int   # reported in batchItemFailures: left on the queue


def receive_window(sqs, queue_url: str, window_files: int, window_seconds: float, idle_seconds: int = SQS_MAX_WAIT_SECONDS,
                   clock: Callable[[], float] = time.monotonic) -> list[dict]:
    """Up to `window_files` messages, gathered for at most `window_seconds` after the first arrives;
    none when nothing arrives within `idle_seconds` (one long poll)."""
    gathered: list[dict] = []
    deadline = None
    while len(gathered) < window_files:
        remaining = idle_seconds if deadline is None else deadline - clock()
        if remaining <= 0:
            break
        received = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=min(SQS_MAX_MESSAGES, window_files - len(gathered)),
            WaitTimeSeconds=min(SQS_MAX_WAIT_SECONDS, math.ceil(remaining)), AttributeNames=["All"],
        ).get("Messages", [])
        if not received and deadline is None:
            break   # nothing arrived in a whole long poll: no window
        if deadline is None:
            deadline = clock() + window_seconds
        gathered.extend(received)
    return gathered


def run_window(sqs, queue_url: str, window_files: int, window_seconds: float, handle: Callable[[list[dict]], dict],
               idle_seconds: int = SQS_MAX_WAIT_SECONDS) -> WindowResult | None:
    """One window: gather, hand to `handle` as Lambda records, delete what it did not report failed."""
    messages = receive_window(sqs, queue_url, window_files, window_seconds, idle_seconds)
    if not messages:
        return None
    records = [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                "attributes": m.get("Attributes", {}), "eventSource": "aws:sqs"} for m in messages]
    failed = {failure["itemIdentifier"] for failure in handle(records)["batchItemFailures"]}
    done = [m for m in messages if m["MessageId"] not in failed]
    for start in range(0, len(done), SQS_MAX_MESSAGES):
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(done[start:start + SQS_MAX_MESSAGES])])
    return WindowResult(len(messages), len(failed))
