"""AWS Signature Version 4, checked the way API Gateway's IAM authorization checks it, for the
local control plane server: a request counts only when it is signed, within five minutes of
now, for this region and the `execute-api` service, by a key the server knows, over exactly the
body it carries. botocore computes the signature (the same code that signs AWS requests).

Keys: a JSON file `{"<access key id>": {"secret": "...", "principal": "<name>"}}`; in AWS the
principal is the caller's IAM ARN and the keys are IAM's.
"""
from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from pathlib import Path

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SERVICE = "execute-api"
MAX_SKEW = datetime.timedelta(minutes=5)
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})$")


class Unauthenticated(Exception):
    """Why a request is refused (403); never says which part of a signature differed."""


@dataclass(frozen=True)
class Key:
    secret: str
    principal: str


def load_keys(path: str | Path) -> dict[str, Key]:
    raw = json.loads(Path(path).read_text())
    return {access_key: Key(entry["secret"], entry["principal"]) for access_key, entry in raw.items()}


def authenticate(method: str, url: str, headers: dict[str, str], body: bytes, keys: dict[str, Key], region: str,
                 now: datetime.datetime | None = None) -> str:
    """The principal that signed this request, or Unauthenticated. `headers`: names lower-case."""
    found = _AUTHORIZATION.match(headers.get("authorization", ""))
    if not found:
        raise Unauthenticated("no AWS Signature Version 4 Authorization header")
    key = keys.get(found["key"])
    if key is None or found["service"] != SERVICE or found["region"] != region:
        raise Unauthenticated("the signature's key, region or service is not this API's")
    signed = found["signed"].split(";")
    if "host" not in signed or "x-amz-date" not in signed or any(name not in headers for name in signed):
        raise Unauthenticated("the signature must cover host and x-amz-date, and every signed header must be sent")
    try:
        stamped = datetime.datetime.strptime(headers["x-amz-date"], SIGV4_TIMESTAMP).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        raise Unauthenticated("x-amz-date is not a SigV4 timestamp") from None
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if abs(now - stamped) > MAX_SKEW or found["date"] != headers["x-amz-date"][:8]:
        raise Unauthenticated("the signature is older or newer than five minutes")
    if "x-amz-content-sha256" in headers and headers["x-amz-content-sha256"] != hashlib.sha256(body).hexdigest():
        raise Unauthenticated("x-amz-content-sha256 does not match the body")
    request = AWSRequest(method=method, url=url, data=body, headers={name: headers[name] for name in signed})
    request.context["timestamp"] = headers["x-amz-date"]
    signer = SigV4Auth(Credentials(found["key"], key.secret), SERVICE, region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if not hmac.compare_digest(expected, found["signature"]):
        raise Unauthenticated("the signature does not match the request")
    return key.principal
