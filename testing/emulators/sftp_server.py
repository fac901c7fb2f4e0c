"""A real OpenSSH server on loopback for SFTP tests, with generated host and client keys."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from audience_relay.testing.emulators.ports import free_port

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass
class SftpServer:
    port: int
    root: Path
    known_hosts: Path
    private_key: str
    username: str
    process: subprocess.Popen

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_sftp_server(workdir: Path, host: str = "127.0.0.1", port: int | None = None) -> SftpServer:
    """Start `sshd -D` (on 127.0.0.1 unless told) with internal-sftp; raises if OpenSSH is not installed."""
    if not Path(SSHD).exists():
        raise RuntimeError("OpenSSH server not installed (apt-get install openssh-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation directory
    host_key, client_key = workdir / "host_ed25519", workdir / "client_ed25519"
    for key in (host_key, client_key):
        for stale in (key, key.with_suffix(".pub")):   # a restarted service: ssh-keygen would ask to overwrite
            stale.unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    authorized = workdir / "authorized_keys"
    authorized.write_text((workdir / "client_ed25519.pub").read_text())
    authorized.chmod(0o600)
    root = workdir / "sftp-root"
    root.mkdir(exist_ok=True)
    port = port or free_port()
    config = workdir / "sshd_config"
    config.write_text(
        f"ListenAddress {host}\nPort {port}\nHostKey {host_key}\nPidFile {workdir / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
        "Subsystem sftp internal-sftp\nLogLevel ERROR\n"
    )
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1" if host == "0.0.0.0" else host, port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"sshd did not start: {process.stderr.read().decode()[-500:]}")
            time.sleep(0.1)
    host_public = (workdir / "host_ed25519.pub").read_text().split()
    known_hosts = workdir / "known_hosts"
    named = socket.gethostname() if host == "0.0.0.0" else host   # a Compose service is reached by its host name
    known_hosts.write_text(f"[{named}]:{port} {host_public[0]} {host_public[1]}\n")
    import getpass

    return SftpServer(port, root, known_hosts, client_key.read_text(), getpass.getuser(), process)


if __name__ == "__main__":
    # The Docker Compose `sftp` service: `python -m testing.emulators.sftp_server WORKDIR HOST PORT`; the
    # client key and known_hosts are written to WORKDIR (a volume the other services mount).
    import sys

    served = start_sftp_server(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
    print(f"sftp on {sys.argv[2]}:{served.port}, root {served.root}, key {sys.argv[1]}/client_ed25519", flush=True)
    served.process.wait()
