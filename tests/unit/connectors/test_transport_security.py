"""TLS and SSH host keys cannot be switched off by accident: not by the environment, a redirect,
a typo in a URL or an empty known_hosts file; and there is no setting that switches them off.

The TLS tests talk to a real HTTPS server on 127.0.0.1 whose self-signed certificate names
127.0.0.1 (so it would verify if it were trusted): it must be refused however the environment
points requests at it (`REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`, `PYTHONHTTPSVERIFY`).
"""
from __future__ import annotations

import datetime
import hashlib
import inspect
import ipaddress
import json
import re
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paramiko
import pytest
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from audience_relay.connectors.destination import Batch
from audience_relay.connectors.destinations.google.client import GoogleDataManager
from audience_relay.connectors.destinations.meta.client import MetaCustomAudiences
from audience_relay.connectors.destinations.sftp.client import KnownHostsError, SftpDestination
from audience_relay.connectors.http.client import HttpApiDestination, HttpError, HttpRequest, InsecureEndpoint, require_secure
from audience_relay.connectors.retry import FailureKind
from audience_relay.connectors.state.store import BatchRecord
from audience_relay.pipeline.config import DEFAULT_CONFIG, ConfigError, parse_config
from audience_relay.pipeline.destinations import build_destination

WEAKENING_ENV = {"CURL_CA_BUNDLE": "", "REQUESTS_CA_BUNDLE": "", "PYTHONHTTPSVERIFY": "0"}


def batch(op: str = "add") -> Batch:
    members = [("email", hashlib.sha256(b"a@example.com").hexdigest()), ("maid", "6d92078a-8246-4ba4-ae5b-76104861e7dc")]
    checksum = hashlib.sha256("\n".join(f"{t}:{k}" for t, k in members).encode()).hexdigest()
    return Batch(BatchRecord("r1", "meta_ads", "aud_1", op, 0, checksum, len(members)), members)


class _Recorder(BaseHTTPRequestHandler):
    """Answers every request with `answer` (status, headers) and counts them on the server."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _any(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append((self.command, self.path))
        status, headers = self.server.answer
        body = json.dumps({"num_received": 2}).encode()
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body)), "Content-Type": "application/json"}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_DELETE = do_GET = _any


def _serve(answer=(200, {}), context: ssl.SSLContext | None = None):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.requests, server.answer, server.daemon_threads = [], answer, True
    if context:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, signed by itself, and its key."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def https_server(self_signed):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed)
    server = _serve(context=context)
    yield server
    server.shutdown()
    server.server_close()


# --- TLS ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("environment", [WEAKENING_ENV, {"REQUESTS_CA_BUNDLE": "/tmp/attacker-ca.pem"}, {"CURL_CA_BUNDLE": "/tmp/attacker-ca.pem"}])
def test_the_environment_does_not_change_what_the_session_verifies_against(monkeypatch, environment):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    destination = HttpApiDestination("https://graph.facebook.com/v26.0", MetaCustomAudiences(), token="t")
    destination.open()
    session = destination._session
    settings = session.merge_environment_settings("https://graph.facebook.com/v26.0/1/users", {}, None, None, None)
    assert settings["verify"] is True and session.trust_env is False


def test_requests_itself_would_let_a_ca_bundle_variable_replace_the_trust_store(monkeypatch):
    """Why the session does not trust the environment (an empty value, by contrast, is ignored)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/tmp/attacker-ca.pem")
    assert requests.Session().merge_environment_settings("https://x.example", {}, None, None, None)["verify"] == "/tmp/attacker-ca.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "")
    monkeypatch.setenv("CURL_CA_BUNDLE", "")
    assert requests.Session().merge_environment_settings("https://x.example", {}, None, None, None)["verify"] is True


@pytest.mark.parametrize("environment", [{}, WEAKENING_ENV, "trust the server's own certificate"])
def test_a_certificate_the_ca_bundle_does_not_vouch_for_is_refused_and_not_retried(monkeypatch, https_server, self_signed, environment):
    if environment == "trust the server's own certificate":
        environment = {"REQUESTS_CA_BUNDLE": str(self_signed[0]), "CURL_CA_BUNDLE": str(self_signed[0]), "SSL_CERT_FILE": str(self_signed[0])}
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    url = f"https://127.0.0.1:{https_server.server_address[1]}"
    with HttpApiDestination(url, MetaCustomAudiences(), token="t") as destination:
        with pytest.raises(requests.exceptions.SSLError) as refused:
            destination.send(batch())
        failure = destination.classify(refused.value)
    assert failure.kind is FailureKind.PERMANENT and "TLS verification of 127.0.0.1 failed" in failure.message
    assert https_server.requests == []  # no request went over the unverified connection


def test_the_same_server_is_reachable_when_its_certificate_is_trusted(https_server, self_signed):
    """The control: the refusal above is verification, not a broken server."""
    response = requests.post(f"https://127.0.0.1:{https_server.server_address[1]}/x", json={}, verify=str(self_signed[0]), timeout=10)
    assert response.status_code == 200 and https_server.requests == [("POST", "/x")]


def test_a_netrc_entry_neither_replaces_a_bearer_token_nor_adds_credentials(monkeypatch, tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine datamanager.googleapis.com login someone password other-secret\n"
                     "machine graph.facebook.com login someone password other-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    google = HttpApiDestination("https://datamanager.googleapis.com", GoogleDataManager(operating_account_id="1"), token="the-token")
    google.open()
    signed = google.profile.authorize(HttpRequest("POST", "/v1/audienceMembers:ingest", {}, {}), "the-token")
    prepared = google._session.prepare_request(requests.Request("POST", "https://datamanager.googleapis.com/v1/audienceMembers:ingest",
                                                                headers=signed.headers))
    assert prepared.headers["Authorization"] == "Bearer the-token"
    meta = HttpApiDestination("https://graph.facebook.com/v26.0", MetaCustomAudiences(), token="the-token")
    meta.open()   # Meta's token travels as a form field: nothing may add an Authorization header
    assert "Authorization" not in meta._session.prepare_request(requests.Request("POST", "https://graph.facebook.com/v26.0/1/users")).headers


@pytest.mark.parametrize("profile", [MetaCustomAudiences(), GoogleDataManager(operating_account_id="1")])
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_not_followed_and_fails_the_batch(profile, status):
    elsewhere = _serve()
    redirecting = _serve((status, {"Location": f"http://127.0.0.1:{elsewhere.server_address[1]}/stolen"}))
    try:
        with HttpApiDestination(f"http://127.0.0.1:{redirecting.server_address[1]}", profile, token="t") as destination:
            with pytest.raises(HttpError) as answered:
                destination.send(batch())
            failure = destination.classify(answered.value)
    finally:
        for server in (elsewhere, redirecting):
            server.shutdown()
            server.server_close()
    assert answered.value.status == status and failure.kind is FailureKind.PERMANENT
    assert len(redirecting.requests) == 1 and elsewhere.requests == []


@pytest.mark.parametrize("url", [
    "http://graph.facebook.com/v26.0", "http://10.0.0.1:8080", "http://localhost.example.com", "http://127.0.0.1@evil.example",
    "http://127.0.0.1.nip.io", "ftp://127.0.0.1", "graph.facebook.com/v26.0", "http://[::ffff:10.0.0.1]",
])
def test_plain_http_is_refused_except_to_loopback(url):
    with pytest.raises(InsecureEndpoint):
        require_secure(url)


@pytest.mark.parametrize("url", ["https://graph.facebook.com/v26.0", "http://127.0.0.1:8080", "http://localhost:1", "http://127.0.0.2"])
def test_https_anywhere_and_http_to_loopback_are_allowed(url):
    require_secure(url)


def test_there_is_no_setting_that_turns_verification_off():
    assert not {"verify", "insecure", "verify_tls"} & set(inspect.signature(HttpApiDestination).parameters)
    assert not {"policy", "host_key_policy", "accept_unknown"} & set(inspect.signature(SftpDestination).parameters)
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["destinations"][0]["connection"]["verify"] = False
    raw["destinations"][2]["connection"]["host_key_policy"] = "auto_add"
    with pytest.raises(ConfigError) as refused:
        parse_config(raw, "destinations.yaml")
    assert "connection.verify: unknown key" in str(refused.value) and "connection.host_key_policy: unknown key" in str(refused.value)


# --- SSH host keys ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def private_key() -> str:
    import io

    text = io.StringIO()
    paramiko.ECDSAKey.generate().write_private_key(text)
    return text.getvalue()


def _known_hosts(tmp_path: Path, content: str | None) -> str:
    path = tmp_path / "known_hosts"
    if content is not None:
        path.write_text(content)
    return str(path)


@pytest.mark.parametrize("content,reason", [
    (None, "cannot read known_hosts (FileNotFoundError)"),
    ("", "holds no host key"),
    ("# keys go here\n\n", "holds no host key"),
    ("sftp.partner.example not-a-key-type AAAA\n", "holds no host key"),
])
def test_a_missing_or_empty_known_hosts_file_is_refused_before_connecting(tmp_path, private_key, content, reason):
    path = _known_hosts(tmp_path, content)
    with pytest.raises(KnownHostsError, match=re.escape(reason)) as refused:
        SftpDestination("127.0.0.1", "relay", "/in", path, private_key, port=1)
    assert path in str(refused.value)


def test_a_directory_as_known_hosts_is_refused(tmp_path, private_key):
    with pytest.raises(KnownHostsError, match="cannot read known_hosts"):
        SftpDestination("127.0.0.1", "relay", "/in", str(tmp_path), private_key)


def test_an_unusable_known_hosts_file_is_a_config_error_naming_the_destination(tmp_path, private_key, monkeypatch):
    monkeypatch.setenv("PARTNER_SFTP_KEY", private_key)
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["destinations"][2]["connection"]["known_hosts"] = _known_hosts(tmp_path, "")
    destination = parse_config(raw, "destinations.yaml").destinations[2]
    with pytest.raises(ConfigError, match=r"destination partner_sftp: connection.known_hosts: .* holds no host key"):
        build_destination(destination)


def test_an_empty_known_hosts_setting_is_refused_by_the_config():
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["destinations"][2]["connection"]["known_hosts"] = ""
    with pytest.raises(ConfigError, match=r"partner_sftp\)\.connection\.known_hosts"):
        parse_config(raw, "destinations.yaml")


def test_a_known_hosts_file_with_a_key_is_accepted_and_unknown_host_keys_are_rejected_at_connect(tmp_path, private_key, monkeypatch):
    key = paramiko.ECDSAKey.generate()
    path = _known_hosts(tmp_path, f"sftp.partner.example {key.get_name()} {key.get_base64()}\n")
    destination = SftpDestination("127.0.0.1", "relay", "/in", path, private_key, port=1)
    policies = []
    original = paramiko.SSHClient.set_missing_host_key_policy
    monkeypatch.setattr(paramiko.SSHClient, "set_missing_host_key_policy", lambda self, policy: (policies.append(policy), original(self, policy)))
    with pytest.raises(OSError):  # nothing listens on port 1
        destination._connect()
    assert policies and all(isinstance(p, paramiko.RejectPolicy) for p in policies)
