"""A real PostgreSQL server (Debian's postgresql package) on 127.0.0.1, for the run catalog tests.

initdb refuses to run as root: as root, the cluster belongs to the `postgres` system user and
the server runs as it (`runuser`). Password authentication (scram-sha-256) on loopback only,
and TLS with a self-signed certificate, as an Aurora cluster is reached (sslmode=require).
"""
from __future__ import annotations

import datetime
import glob
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from audience_relay.testing.emulators.ports import free_port

USER = "relay"
DATABASE = "catalog"


def _self_signed(root: Path) -> tuple[Path, Path]:
    """server.crt and server.key (mode 0600, as PostgreSQL requires) for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert, private = root / "server.crt", root / "server.key"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    private.chmod(0o600)
    return cert, private


def _binaries() -> Path:
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)), None)
    if not found:
        raise RuntimeError("PostgreSQL server binaries (initdb, postgres) not found: install them (apt-get install postgresql)")
    return Path(os.path.realpath(found)).parent


@dataclass
class PostgresServer:
    root: Path
    port: int
    password: str
    process: subprocess.Popen

    def dsn(self, database: str = DATABASE) -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh database (one per test), returning its DSN."""
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres_server() -> PostgresServer:
    binaries = _binaries()
    root = Path(tempfile.mkdtemp(prefix="audience-relay-postgres-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    password = secrets.token_urlsafe(16)
    (root / "password").write_text(password)
    cert, key = _self_signed(root)
    if as_owner:
        for owned in (root / "password", cert, key):
            shutil.chown(owned, "postgres", "postgres")
    subprocess.run([*as_owner, str(binaries / "initdb"), "-D", str(root / "data"), "-U", USER, "--auth=scram-sha-256",
                    f"--pwfile={root / 'password'}", "--encoding=UTF8", "--no-sync"], check=True, capture_output=True)
    port = free_port()
    log = open(root / "server.log", "w")   # noqa: SIM115 - the server writes it until it stops
    process = subprocess.Popen(
        [*as_owner, str(binaries / "postgres"), "-D", str(root / "data"), "-h", "127.0.0.1", "-p", str(port),
         "-k", str(root), "-c", "fsync=off", "-c", "max_connections=50",
         "-c", "ssl=on", "-c", f"ssl_cert_file={cert}", "-c", f"ssl_key_file={key}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    server = PostgresServer(root, port, password, process)
    import psycopg

    deadline = time.monotonic() + 60
    while True:
        try:
            with psycopg.connect(server.dsn("postgres"), connect_timeout=2, autocommit=True) as connection:
                connection.execute(f"CREATE DATABASE {DATABASE}")
            return server
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"PostgreSQL did not start: {(root / 'server.log').read_text()[-1000:]}") from None
            time.sleep(0.3)
