"""An S3 drop's `connection`."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from audience_relay.connectors.destinations.connection import Connection, folder


class S3Connection(Connection):
    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    prefix: str = ""
    kms_key_id: str | None = None

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return folder(value, "prefix")
