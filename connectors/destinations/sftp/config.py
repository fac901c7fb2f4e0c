"""An SFTP drop's `connection`."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from audience_relay.connectors.destinations.connection import Connection, folder


class SftpConnection(Connection):
    host: str
    port: Annotated[int, Field(gt=0, lt=65536)] = 22
    username: str
    remote_dir: str
    known_hosts: Annotated[str, Field(min_length=1)]

    @field_validator("remote_dir")
    @classmethod
    def _remote_dir(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"remote_dir {value!r} must be absolute (it is the root batch files are written under)")
        return folder(value, "remote_dir")
