"""Where the run catalog's connection string comes from, read without psycopg installed.

Locally and in tests it is given whole (CATALOG_DSN). In AWS it is built at each use from the
Aurora cluster's admin secret, which RDS keeps and rotates (every seven days by default): a
DSN read once at a Lambda's cold start would stop working at the next rotation.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

# Aurora's TLS certificate is not checked (that needs the RDS CA bundle in the package), but
# the connection is encrypted and stays inside the VPC.
SSL_MODE = "require"


class CatalogSourceError(ValueError):
    """The catalog's settings or its secret are incomplete; names the setting or the secret, never a password."""


@dataclass(frozen=True)
class CatalogSource:
    dsn: str | None = None          # given whole
    secret_arn: str | None = None   # or built from the RDS-managed secret ({"username", "password"}) and:
    host: str | None = None
    port: int = 5432
    database: str = "audience_relay"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> CatalogSource | None:
        """CATALOG_DSN, or CATALOG_SECRET_ARN with CATALOG_HOST (CATALOG_PORT, CATALOG_DATABASE); None: no catalog."""
        if environ.get("CATALOG_DSN"):
            return cls(dsn=environ["CATALOG_DSN"])
        if not environ.get("CATALOG_SECRET_ARN"):
            return None
        if not environ.get("CATALOG_HOST"):
            raise CatalogSourceError("CATALOG_SECRET_ARN is set without CATALOG_HOST (the cluster's endpoint)")
        port = environ.get("CATALOG_PORT") or "5432"
        if not port.isdigit():
            raise CatalogSourceError(f"CATALOG_PORT: {port!r} is not a port number")
        return cls(secret_arn=environ["CATALOG_SECRET_ARN"], host=environ["CATALOG_HOST"], port=int(port),
                   database=environ.get("CATALOG_DATABASE") or cls.database)

    def resolve(self, secrets_client=None) -> str:
        """The connection string now: the given one, or one built from the secret's current value
        (read with `secrets_client`, else a Secrets Manager client made for it)."""
        if self.dsn:
            return self.dsn
        from psycopg.conninfo import make_conninfo

        from audience_relay.connectors.aws.secretsmanager import secret_value

        value = secret_value(self.secret_arn, secrets_client)
        try:
            secret = json.loads(value)
            user, password = secret["username"], secret["password"]
        except (ValueError, TypeError, KeyError):
            raise CatalogSourceError(f"secret {self.secret_arn}: not the JSON RDS keeps ({{\"username\", \"password\"}})") from None
        return make_conninfo(host=self.host, port=self.port, dbname=self.database, user=user, password=password, sslmode=SSL_MODE)
