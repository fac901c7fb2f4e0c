"""AWS Secrets Manager: a secret's current value, read in the secret's own region."""
from __future__ import annotations

from audience_relay.connectors.aws.clients import client as make_client


def client(region: str | None = None):
    return make_client("secretsmanager", **({"region_name": region} if region else {}))


def secret_value(secret_arn: str, secrets=None) -> str:
    """The secret's string (or its binary, decoded), through `secrets` or a client of the ARN's region."""
    answer = (secrets or client(secret_arn.split(":")[3])).get_secret_value(SecretId=secret_arn)
    return answer.get("SecretString") or answer["SecretBinary"].decode()
