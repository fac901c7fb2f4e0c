"""SFTP delivery to a real OpenSSH server on loopback."""
import gzip
import random

import paramiko
import pytest

from audience_relay.connectors.delivery import deliver_batches
from audience_relay.connectors.destinations.sftp.client import SftpDestination
from audience_relay.connectors.rate_limit import TokenBucket
from audience_relay.connectors.retry import RetryPolicy
from audience_relay.connectors.state.sqlite import SqliteStateStore
from tests.integration.test_http_destinations import make_batches

pytestmark = pytest.mark.integration


def destination(server, known_hosts=None):
    return SftpDestination("127.0.0.1", server.username, str(server.root / "incoming"), str(known_hosts or server.known_hosts),
                           server.private_key, port=server.port, timeout_seconds=5)


def run(target, work, store):
    return deliver_batches(target, work, store, TokenBucket(100), None, RetryPolicy(base_seconds=0.01, cap_seconds=0.05), random.Random(0))


def test_batches_arrive_as_whole_gzip_csv_files(sftp_server, tmp_path):
    server = sftp_server
    work = make_batches(3, size=40)
    outcomes = run(destination(server), work, SqliteStateStore(tmp_path / "s.db"))
    assert [o.state for o in outcomes] == ["delivered"] * 3
    files = sorted((server.root / "incoming").rglob("*.csv.gz"))
    assert len(files) == 3 and not list((server.root / "incoming").rglob(".*partial"))
    lines = gzip.decompress(files[0].read_bytes()).decode().splitlines()
    assert lines[0] == "id_type,id" and len(lines) == 41


def test_dropped_connection_mid_file_resumes_without_a_visible_partial_file(sftp_server, tmp_path, monkeypatch):
    server = sftp_server
    target = destination(server)
    [batch] = make_batches(1, size=60_000, run="big")  # ~2 MB of gzip: several chunks
    final = server.root / "incoming" / "big" / "dest" / "aud_1" / "remove"
    original_write = paramiko.SFTPFile.write
    state = {"chunks": 0, "seen_partial_only": None}

    def write_then_drop(handle, data):
        state["chunks"] += 1
        if state["chunks"] == 3:  # the third chunk: the connection dies mid-file
            visible = sorted(p.name for p in final.iterdir())
            state["seen_partial_only"] = all(name.startswith(".") and name.endswith(".partial") for name in visible)
            target._client.get_transport().close()
        return original_write(handle, data)

    monkeypatch.setattr(paramiko.SFTPFile, "write", write_then_drop)
    [outcome] = run(target, [batch], SqliteStateStore(tmp_path / "s.db"))
    assert outcome.state == "delivered" and outcome.retries == 1
    assert state["seen_partial_only"] is True
    [delivered] = final.glob("*.csv.gz")
    lines = gzip.decompress(delivered.read_bytes()).decode().splitlines()
    assert len(lines) == 60_001 and not list(final.glob(".*"))


def test_unknown_host_key_is_refused_not_accepted(sftp_server, tmp_path):
    server = sftp_server
    other_host = tmp_path / "known_hosts"  # a real key, for another host: ours is not in it
    other_host.write_text(server.known_hosts.read_text().replace(f"[127.0.0.1]:{server.port}", "[sftp.partner.example]:22"))
    [outcome] = run(destination(server, other_host), make_batches(1), SqliteStateStore(tmp_path / "s.db"))
    assert outcome.state == "failed" and "host key" in outcome.error


def test_a_server_that_stops_answering_mid_upload_times_out_and_is_retried(sftp_server, tmp_path):
    """Without read and write timeouts a stalled server holds the worker (and the quota lease)
    until Glue's job timeout; with them the send fails as retryable within the timeout."""
    import threading
    import time

    from audience_relay.connectors.retry import FailureKind
    from audience_relay.testing.emulators.stalling_proxy import StallingProxy

    server = sftp_server
    proxy = StallingProxy(server.port)
    known_hosts = tmp_path / "known_hosts"   # the same host key, under the proxy's port
    known_hosts.write_text(server.known_hosts.read_text().replace(f"]:{server.port} ", f"]:{proxy.port} "))
    target = SftpDestination("127.0.0.1", server.username, str(server.root / "incoming"), str(known_hosts),
                             server.private_key, port=proxy.port, timeout_seconds=2)
    first, second = make_batches(2, size=40, run="stall")
    target.send(first)   # connected and delivering
    proxy.stall()
    result = {}

    def send():
        started = time.monotonic()
        try:
            target.send(second)
            result["error"] = None
        except Exception as error:  # noqa: BLE001 - the test looks at it
            result["error"] = error
        result["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=send, daemon=True)
    worker.start()
    worker.join(20)
    try:
        assert not worker.is_alive(), "the send still waits for a server that stopped answering"
        assert result["error"] is not None and result["seconds"] < 10
        assert target.classify(result["error"]).kind is FailureKind.RETRYABLE
    finally:
        proxy.close()
