"""What a destination's `connection` config is built from: each folder's config.py declares its
own model on these bases, and the config loader validates a destination's `connection` with the
model its profile's folder names (connectors/destinations/registry.py)."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

ENV_NAME = r"^[A-Z_][A-Z0-9_]{0,127}$"
SECRET_ARN = r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+$"


class Strict(BaseModel):
    """Unknown keys are errors and a loaded config never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Credentials(Strict):
    """Where a secret lives: an environment variable or a Secrets Manager ARN, never inline."""

    env: Annotated[str, Field(pattern=ENV_NAME)] | None = None
    secret_arn: Annotated[str, Field(pattern=SECRET_ARN)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Credentials:
        if (self.env is None) == (self.secret_arn is None):
            raise ValueError("give exactly one of `env` or `secret_arn`")
        return self


class Connection(Strict):
    """A destination's `connection`: where and how to reach it, beyond the shared keys."""

    def secret_references(self) -> dict[str, str]:
        """Every Secrets Manager ARN the connection names, by its key (`connection.<key>.secret_arn`)."""
        return {f"connection.{key}.secret_arn": value.secret_arn
                for key, value in self if isinstance(value, Credentials) and value.secret_arn}

    def consent_columns(self) -> dict[str, str]:
        """Consent signal -> membership input column, for a destination that sends consent per member."""
        return {}


class HttpConnection(Connection):
    """What the HTTP API engine (connectors/http/client.py) needs of every HTTP API destination."""

    base_url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    account_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None   # goes into URL paths
    # Where the audience reports are read (`feedback`), when not at base_url.
    report_base_url: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None
    # The API's own id of each audience (Meta custom audience id, Google user list id);
    # audiences not listed are sent under their configured name.
    # One URL path segment (Meta puts it in the path): never `.` or `..`.
    audience_ids: dict[str, Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]] = {}
    # How long one request may take (connect and read); a timed-out batch is retried.
    timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 30.0


def folder(value: str, what: str) -> str:
    """A folder batch files are written under (the root of what we write): no `.`, `..` or empty segment."""
    inner = value.strip("/").split("/") if value.strip("/") else []
    if any(part in ("", ".", "..") for part in inner) or any(ord(c) < 32 for c in value) or "\\" in value:
        raise ValueError(f"{what} {value!r} may not hold '.', '..' or empty segments, backslashes or control characters")
    return value
