"""Secrets by reference: an environment variable or a Secrets Manager ARN, resolved at open time.

The value is returned to the connector that needs it and never logged or stored.
"""
from __future__ import annotations

import json
import os

from botocore.exceptions import BotoCoreError, ClientError

from audience_relay.connectors.aws.secretsmanager import secret_value


class SecretUnavailable(RuntimeError):
    """The referenced secret does not exist or cannot be read; the message names the reference."""


def resolve_secret(env: str | None = None, secret_arn: str | None = None) -> str:
    """The secret's value, stripped; a value with control characters is refused (it would end
    up in an exception message as part of a malformed header)."""
    value = _lookup(env, secret_arn).strip()
    if not value or any(ord(c) < 32 and c not in "\n\r" for c in value):
        raise SecretUnavailable(f"{env or secret_arn}: empty or holds control characters")
    return value


def json_fields(secret: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, str]:
    """A secret that holds several values as a JSON object of strings: the required ones, and the
    optional ones it has; `SecretUnavailable` naming them otherwise (never quoting the secret)."""
    try:
        fields = json.loads(secret)
    except ValueError:
        fields = None
    if not isinstance(fields, dict) or any(not isinstance(fields.get(name), str) for name in required):
        extra = f" (and optionally {', '.join(optional)})" if optional else ""
        raise SecretUnavailable(f"the secret must be JSON with {', '.join(required)}{extra}")
    return {name: fields[name] for name in (*required, *optional) if isinstance(fields.get(name), str)}


def _lookup(env: str | None, secret_arn: str | None) -> str:
    if env:
        value = os.environ.get(env)
        if not value:
            raise SecretUnavailable(f"environment variable {env} is not set")
        return value
    if secret_arn:
        try:
            return secret_value(secret_arn)
        except (BotoCoreError, ClientError) as error:
            raise SecretUnavailable(f"{secret_arn}: {type(error).__name__}") from None
    raise SecretUnavailable("no credentials reference configured")
