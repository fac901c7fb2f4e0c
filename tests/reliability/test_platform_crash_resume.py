"""kill -9 the deliver job while a request to one of the newest ad platforms is in flight, then
resume: every platform ends holding exactly the run's members, each batch recorded delivered,
the snapshots committed, and a batch sent twice only where its request was in flight.

One prepared run delivers to TikTok, Snapchat, LinkedIn, X and Pinterest at once (their emulator
dialects; OAuth secrets in Secrets Manager on moto, where Spark's workers read them); the job is
killed with its whole session by TikTok's emulator after it accepted a few batches, then run again.
"""
from __future__ import annotations

import json
from collections import defaultdict
from contextlib import ExitStack

import boto3
import pyarrow.parquet as pq
import pytest

from audience_relay.cli.main import main
from audience_relay.connectors.failpoints import kill_session
from audience_relay.testing.emulators.http_destination import HttpDestinationEmulator
from tests.integration.platforms import PLATFORMS, emulator_config, secret
from tests.reliability.runs import RUN_ID, ledger_states, prepare_run, start_deliver

pytestmark = pytest.mark.integration
WORKERS = 2
IDS = {"aud_a": "5550001", "aud_b": "5550002"}


def destination(destination_id: str, secret_arn: str) -> dict:
    profile, connection = PLATFORMS[destination_id]
    return {"id": destination_id, "kind": "http_api", "profile": profile, "id_types": ["email"], "max_batch_size": 25,
            "credentials": {"secret_arn": secret_arn}, "sync_mode": "mirror", "connection": {**connection, "audience_ids": IDS},
            "audiences": {"aud_a": ["seg_1", "seg_2"], "aud_b": ["seg_3", "seg_4"]}}


def expected_members(out) -> dict[str, dict[str, set]]:
    """destination -> platform audience id -> the run's members, from its batch files (one run: adds only)."""
    rows = pq.read_table(out / "runs" / RUN_ID / "batches", partitioning="hive").to_pylist()
    expected = defaultdict(lambda: defaultdict(set))
    for row in rows:
        assert row["op"] == "add"
        expected[row["destination_id"]][IDS[row["audience_id"]]].add((row["id_type"], row["match_key"]))
    return expected


def test_killed_with_a_request_in_flight_then_resumed_every_platform_holds_the_run(spark, moto_server, tmp_path):
    emulators = {d: HttpDestinationEmulator(emulator_config(profile)) for d, (profile, _) in PLATFORMS.items()}
    holder: dict = {}

    def kill_mid_request(accepted: int) -> None:
        if accepted == 6 and "job" in holder:
            kill_session(holder["job"].process.pid)

    emulators["tiktok"].config.on_accept = kill_mid_request
    with ExitStack() as running:
        destinations = []
        for destination_id, emulator in emulators.items():
            running.enter_context(emulator)
            arn = boto3.client("secretsmanager").create_secret(Name=f"crash/{destination_id}-{tmp_path.name}",
                                                               SecretString=secret(PLATFORMS[destination_id][0], emulator.url))["ARN"]
            destinations.append(destination(destination_id, arn))
        run = prepare_run(tmp_path / "prepared", 600, destinations)
        endpoints = {destination_id: emulator.url for destination_id, emulator in emulators.items()}
        holder["job"] = start_deliver(run, endpoints, tmp_path / "logs", workers=WORKERS)
        code, summary = holder["job"].wait()
        assert code == -9 and summary is None, holder["job"].stderr_tail()
        accepted_at_kill = {d: sum(e.score.accepted.values()) for d, e in emulators.items()}
        assert accepted_at_kill["tiktok"] >= 6 and set(ledger_states(run).values()) != {"delivered"}
        emulators["tiktok"].config.on_accept = None
        arguments = [argument for d, url in endpoints.items() for argument in ("--endpoint", f"{d}={url}")]
        assert main(["deliver", "--out", str(run.out), "--run-id", RUN_ID, "--config", str(run.config), "--workers", str(WORKERS),
                     *arguments]) == 0
        summary = json.loads((run.out / "runs" / RUN_ID / "delivery" / "summary.json").read_text())
        assert summary["status"] == "SUCCEEDED", summary
        assert set(ledger_states(run).values()) == {"delivered"} and len(ledger_states(run)) == len(run.batches())
        expected = expected_members(run.out)
        for destination_id, emulator in emulators.items():
            assert summary["destinations"][destination_id]["snapshot_committed"], destination_id
            assert dict(emulator.score.held) == dict(expected[destination_id]), destination_id   # nothing lost
            # A second copy only of a batch in flight when the job died (one per worker at most).
            assert emulator.score.duplicates <= WORKERS, (destination_id, emulator.score.duplicates)
