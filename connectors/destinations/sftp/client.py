"""SFTP file destination (paramiko): one gzip CSV per batch, never a partial file in sight.

Each batch is written to a dot-prefixed `.partial` name and renamed when complete, so the
partner's poller only ever sees whole files. After a dropped connection the next attempt
reconnects and continues the partial file from where it stopped: the bytes of a batch are
deterministic, so the rest is the same rest. Host keys must be in the configured
known_hosts file; an unknown or changed key is refused, never accepted.
"""
from __future__ import annotations

import hashlib
import io
import posixpath
import socket

import paramiko
from paramiko.sftp import CMD_STATUS

from audience_relay.connectors.destination import Batch, Destination, Receipt
from audience_relay.connectors.files import UnsafeFileName, batch_file_bytes, batch_file_name
from audience_relay.connectors.retry import Failure, FailureKind

CHUNK = 256 * 1024


def _load_key(text: str) -> paramiko.PKey:
    """A private key of any type paramiko knows, from its text (as stored in a secret)."""
    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise ValueError("the SFTP private key is not an Ed25519, ECDSA or RSA key")


class KnownHostsError(ValueError):
    """The known_hosts file is missing, unreadable or holds no host key: no server could be verified."""


def require_known_hosts(path: str) -> None:
    """Refuse a known_hosts file that could verify nothing, before any connection is tried.

    With no key to compare, `RejectPolicy` would refuse every server anyway, but as a connection
    failure of each batch; this says what is wrong with the configuration instead. There is no
    setting that accepts unknown host keys.
    """
    if not path:
        raise KnownHostsError("known_hosts is not set: host keys are always checked")
    try:
        keys = paramiko.HostKeys(path)
    except (OSError, UnicodeDecodeError) as error:
        raise KnownHostsError(f"{path}: cannot read known_hosts ({type(error).__name__}); host keys are always checked") from None
    if len(keys) == 0:
        raise KnownHostsError(f"{path}: known_hosts holds no host key; host keys are always checked, so no server could be accepted")


def make_dirs(sftp: paramiko.SFTPClient, path: str) -> None:
    """`mkdir -p` over SFTP, safe when several workers make the same folders at once."""
    parts = path.strip("/").split("/")
    for depth in range(1, len(parts) + 1):
        folder = "/" + "/".join(parts[:depth])
        try:
            sftp.stat(folder)
        except FileNotFoundError:
            try:
                sftp.mkdir(folder)
            except IOError as error:
                try:
                    sftp.stat(folder)  # another worker made it meanwhile
                except FileNotFoundError:
                    raise error from None


def confirm_pipelined_writes(sftp: paramiko.SFTPClient, handle: paramiko.SFTPFile) -> None:
    """Wait for the server's answer to every write still outstanding; a failed one raises IOError.

    paramiko (5.1) checks pipelined writes only in rounds of 100 while writing and drops the
    answers still outstanding at close, so a write failing near the end would go unseen and
    leave a gap the size check cannot see. This drains them as paramiko's own round does.
    """
    handle.flush()
    while handle._reqs:
        kind, _ = sftp._read_response(handle._reqs.popleft())  # raises IOError on an error status
        if kind != CMD_STATUS:
            raise IOError("unexpected SFTP answer to a write")


class SftpDestination(Destination):
    def __init__(
        self, host: str, username: str, remote_dir: str, known_hosts: str, private_key: str,
        port: int = 22, timeout_seconds: float = 30.0,
    ) -> None:
        self.host, self.port, self.username, self.remote_dir = host, port, username, remote_dir.rstrip("/")
        require_known_hosts(known_hosts)
        self.known_hosts, self.timeout = known_hosts, timeout_seconds
        self._key = _load_key(private_key)
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def open(self) -> None:
        """Connections are made by the first send, so connect failures are classified and retried."""

    def _connect(self) -> None:
        client = paramiko.SSHClient()
        client.load_host_keys(self.known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(
            self.host, port=self.port, username=self.username, pkey=self._key, timeout=self.timeout,
            banner_timeout=self.timeout, auth_timeout=self.timeout, channel_timeout=self.timeout,
            allow_agent=False, look_for_keys=False,
        )
        sftp = client.open_sftp()
        # Every read and write of the session waits at most this long: a server that stops
        # answering fails the send (socket.timeout, retryable) instead of holding the worker,
        # and the quota lease, until the job's own timeout.
        sftp.get_channel().settimeout(self.timeout)
        self._client, self._sftp = client, sftp

    def close(self) -> None:
        if self._client:
            self._client.close()
        self._client = self._sftp = None

    def _connected(self) -> paramiko.SFTPClient:
        transport = self._client.get_transport() if self._client else None
        if transport is None or not transport.is_active():
            self.close()
            self._connect()
        return self._sftp

    def remote_path(self, batch: Batch) -> str:
        return posixpath.join(self.remote_dir, batch_file_name(batch))

    def send(self, batch: Batch) -> Receipt:
        try:
            return self._upload(batch)
        except Exception:
            self.close()  # the SFTP channel may be dead while SSH lives: reconnect next time
            raise

    def _upload(self, batch: Batch) -> Receipt:
        sftp = self._connected()
        data = batch_file_bytes(batch)
        final = self.remote_path(batch)
        folder, name = posixpath.split(final)
        # The partial file is named after its bytes: only an upload of the very same bytes is
        # continued (a batch written by an earlier version of the format starts over).
        partial = posixpath.join(folder, f".{name}.{hashlib.sha256(data).hexdigest()[:16]}.partial")
        make_dirs(sftp, folder)
        try:
            offset = sftp.stat(partial).st_size
        except FileNotFoundError:
            offset = 0
        if offset > len(data):
            offset = 0  # not ours to continue: start over
        with sftp.open(partial, "r+" if offset else "w") as handle:
            # Without pipelining every 32 KB write waits for the server's answer in turn.
            handle.set_pipelined(True)
            handle.seek(offset)
            for start in range(offset, len(data), CHUNK):
                handle.write(data[start:start + CHUNK])
            confirm_pipelined_writes(sftp, handle)
        if sftp.stat(partial).st_size != len(data):
            raise IOError(f"{partial}: size after upload differs from the batch file")
        sftp.posix_rename(partial, final)
        return Receipt(len(batch.members), f"sftp://{self.host}{final}")

    def classify(self, error: Exception) -> Failure:
        if isinstance(error, UnsafeFileName):
            return Failure(FailureKind.PERMANENT, str(error))
        if isinstance(error, paramiko.BadHostKeyException) or isinstance(error, paramiko.SSHException) and "not found in known_hosts" in str(error):
            return Failure(FailureKind.PERMANENT, f"SFTP host key of {self.host} refused: {type(error).__name__}")
        if isinstance(error, paramiko.AuthenticationException):
            return Failure(FailureKind.PERMANENT, f"SFTP authentication as {self.username} failed")
        if isinstance(error, PermissionError):
            return Failure(FailureKind.PERMANENT, f"SFTP permission denied under {self.remote_dir}")
        if isinstance(error, (paramiko.SSHException, socket.error, EOFError, IOError)):
            return Failure(FailureKind.RETRYABLE, f"SFTP {type(error).__name__}: connection dropped or write failed")
        return Failure(FailureKind.PERMANENT, f"unexpected {type(error).__name__}")
