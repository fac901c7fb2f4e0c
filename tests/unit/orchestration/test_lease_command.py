"""`audience-relay lease`: what an operator sees of a lease, and a forced release that fences the holder out."""
import json
import uuid

import pytest

from audience_relay.cli.main import main
from audience_relay.connectors.state.dynamodb import create_table
from audience_relay.connectors.state.lease import LeaseLock, LeaseLost


@pytest.fixture
def table(moto_server):
    name = f"leases-{uuid.uuid4().hex[:8]}"
    create_table(name)
    return name


def lease_command(capsys, *arguments) -> tuple[int, dict | None, str]:
    capsys.readouterr()
    code = main(["lease", *arguments])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else None, captured.err


def test_show_names_the_holder_and_whether_the_lease_is_live(table, capsys):
    held = LeaseLock(table).acquire("google_ads_project", "arn:execution:1", 600)
    code, lease, _ = lease_command(capsys, "--state", f"dynamodb://{table}", "--key", "google_ads_project")
    assert code == 0
    assert lease["owner"] == "arn:execution:1" and lease["fencing_token"] == held.token and lease["live"]


def test_force_release_frees_the_lease_and_fences_the_stuck_holder_out(table, capsys):
    lock = LeaseLock(table)
    stuck = lock.acquire("q", "arn:execution:stuck", 3600)
    code, lease, err = lease_command(capsys, "--state", f"dynamodb://{table}", "--key", "q", "--release")
    assert code == 0 and lease["owner"] is None and not lease["live"] and lease["fencing_token"] == stuck.token
    assert '"lease.force_released"' in err
    with pytest.raises(LeaseLost):
        lock.check_fence(stuck)
    with pytest.raises(LeaseLost):
        lock.renew(stuck, 60)
    assert lock.acquire("q", "arn:execution:next", 60).token == stuck.token + 1


def test_release_for_a_named_owner_refuses_when_someone_else_holds_it(table, capsys):
    LeaseLock(table).acquire("q", "arn:execution:current", 600)
    code, _, err = lease_command(capsys, "--state", f"dynamodb://{table}", "--key", "q", "--release", "--owner", "arn:execution:old")
    assert code == 2 and "arn:execution:old" in err
    assert LeaseLock(table).describe("q")["owner"] == "arn:execution:current"


def test_an_unknown_lease_or_a_sqlite_state_is_a_clear_error(table, capsys):
    code, _, err = lease_command(capsys, "--state", f"dynamodb://{table}", "--key", "nope")
    assert code == 2 and "no lease 'nope'" in err
    code, _, err = lease_command(capsys, "--state", "/tmp/delivery.db", "--key", "q")
    assert code == 2 and "dynamodb://TABLE" in err
