"""The destination registry: the destinations registered through the control plane, one DynamoDB item each.

An item holds the destination's config mapping exactly as it would be written in the YAML
file. Before any write the whole registry, with the change, is checked as one config
(`pipeline.config.parse_config`): a registered destination is validated exactly like the YAML
config, the checks across destinations included (unique ids, one limit per shared quota).
Every write is conditional on the item's version, so two operators changing one destination
cannot overwrite each other unseen.

Item: `destination_id` (the table's key), `spec` (JSON text of the mapping), `active` and
`quota_key` (what the scheduler's fan-out reads: the lease its delivery takes is the quota's),
`version`, `updated_at`, `updated_by` (the caller's principal).

The jobs read their config from one file (`config_uri`); `publish` rewrites its destinations
from the registry after every change, keeping the file's other settings, so a run started after
a registration prepares and delivers the new destination.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

import yaml
from botocore.exceptions import ClientError

from audience_relay.connectors.aws import dynamodb
from audience_relay.control.errors import Conflict, Invalid, NotFound, StaleVersion
from audience_relay.orchestration.cloudformation import names_own_secret, secret_name
from audience_relay.pipeline import storage
from audience_relay.pipeline.config import ConfigError, Destination, parse_config

CONFIG_VERSION = 1


@dataclass(frozen=True)
class Registered:
    id: str
    spec: dict
    version: int
    updated_at: str
    updated_by: str

    @property
    def active(self) -> bool:
        return self.spec.get("active", True) is not False

    @property
    def destination(self) -> Destination:
        """The mapping as the jobs read it (it was validated when written)."""
        return parse_config({"version": CONFIG_VERSION, "destinations": [self.spec]}, "registry").destinations[0]

    def as_json(self) -> dict:
        return {"id": self.id, "active": self.active, "version": self.version, "updated_at": self.updated_at,
                "updated_by": self.updated_by, "destination": self.spec}


def _validated_alone(spec: object) -> str:
    """The destination's own errors, named by their key in the request body; returns its id."""
    if not isinstance(spec, dict):
        raise Invalid("the body must be one destination's mapping, as in the YAML file's `destinations` list")
    try:
        parse_config({"version": CONFIG_VERSION, "destinations": [spec]}, "body")
    except ConfigError as error:
        prefix = f"body: destinations[0] ({spec.get('id')})." if isinstance(spec.get("id"), str) else "body: destinations[0]."
        raise Invalid("\n".join(line.replace(prefix, "", 1) for line in str(error).splitlines())) from None
    return spec["id"]


def _refused_through_the_api(spec: dict, stage: str | None) -> list[str]:
    """What only a deploy may set: another destination's secret, an API host off the profile's
    allow-list, a file destination's host or bucket (where the audiences go)."""
    destination = parse_config({"version": CONFIG_VERSION, "destinations": [spec]}, "body").destinations[0]
    problems = []
    if destination.kind in ("sftp", "s3"):
        problems.append(f"kind: {destination.kind} destinations send to a host or bucket no allow-list can vouch for; "
                        "add or change them in the deployed config (audience-relay deploy)")
    hosts = destination.profile_spec.api_hosts
    for key in ("base_url", "report_base_url"):
        url = getattr(getattr(destination, "connection", None), key, None)
        if url and urlparse(url).hostname not in hosts:
            problems.append(f"connection.{key}: host {urlparse(url).hostname!r} is not one of the {destination.profile} API's "
                            f"{list(hosts)}; another host needs a deploy")
    if stage is not None and destination.credentials is not None and not destination.credentials.secret_arn:
        problems.append(f"credentials.secret_arn: a destination registered here reads its own secret, "
                        f"...:secret:{secret_name(stage, destination.id)}")
    for key, arn in destination.secret_references().items() if stage is not None else ():
        if not names_own_secret(stage, destination.id, arn):
            problems.append(f"{key}: a destination registered here reads its own secrets, "
                            f"...:secret:{secret_name(stage, destination.id)} (or .../<part>)")
    return problems


class DestinationRegistry:
    def __init__(self, table_name: str, client=None, clock=time.time, stage: str | None = None) -> None:
        self.table_name = table_name
        self._client = client or dynamodb.client()
        self._clock = clock
        self.stage = stage   # known in the stage's Lambda: secrets are bound to `audience-relay/<stage>/<id>`

    def list(self) -> list[Registered]:
        return sorted((self._registered(item) for item in self._items()), key=lambda r: r.id)

    def _items(self, **scan) -> Iterator[dict]:
        """Every item of the table (matching `scan`'s filter), page after page."""
        start = None
        while True:
            page = self._client.scan(TableName=self.table_name, ConsistentRead=True, **scan,
                                     **({"ExclusiveStartKey": start} if start else {}))
            yield from page["Items"]
            start = page.get("LastEvaluatedKey")
            if not start:
                return

    def get(self, destination_id: str) -> Registered:
        item = self._client.get_item(TableName=self.table_name, Key={"destination_id": {"S": destination_id}},
                                     ConsistentRead=True).get("Item")
        if not item:
            raise NotFound(f"destination {destination_id!r} is not registered")
        return self._registered(item)

    def _check_api_change(self, spec: dict) -> None:
        problems = _refused_through_the_api(spec, self.stage)
        if problems:
            raise Invalid("\n".join(problems))

    def register(self, spec: object, principal: str, deployed: bool = False) -> Registered:
        """`deployed`: from the config file a deploy uploads, which may set what the API may not."""
        destination_id = _validated_alone(spec)
        if not deployed:
            self._check_api_change(spec)
        self._check_with_others(destination_id, spec)
        return self._write(destination_id, spec, principal, expected_version=None)

    def update(self, destination_id: str, spec: object, principal: str, expected_version: int | None = None,
               deployed: bool = False) -> Registered:
        """Replace a destination's mapping; `expected_version` (If-Match) guards against a concurrent change."""
        if _validated_alone(spec) != destination_id:
            raise Invalid(f"id: {spec['id']!r} differs from the destination in the path, {destination_id!r}")
        if not deployed:
            self._check_api_change(spec)
        current = self.get(destination_id)
        if expected_version is not None and expected_version != current.version:
            raise StaleVersion(f"destination {destination_id!r} is at version {current.version}, not {expected_version}")
        if "active" not in spec and not current.active:
            spec = {**spec, "active": False}   # an edit does not undo a pause; resume does
        self._check_with_others(destination_id, spec)
        return self._write(destination_id, spec, principal, expected_version=current.version)

    def set_active(self, destination_id: str, active: bool, principal: str) -> Registered:
        """Pause (the next fan-out leaves it out) or resume a destination."""
        current = self.get(destination_id)
        spec = {**current.spec, "active": active}
        if active:
            self._check_with_others(destination_id, spec)
        return self._write(destination_id, spec, principal, expected_version=current.version)

    def seed(self, config_uri: str, principal: str) -> list[str]:
        """Register or update every destination of a config file (what `deploy` uploads); returns
        the ids it changed. Destinations registered only through the API stay, and a destination
        paused through the API stays paused unless the file sets `active` itself."""
        raw = yaml.safe_load(storage.read_text(config_uri) or "{}") or {}
        changed = []
        for spec in raw.get("destinations") or []:
            try:
                current = self.get(spec.get("id", ""))
            except NotFound:
                self.register(spec, principal, deployed=True)
                changed.append(spec["id"])
                continue
            spec = spec if "active" in spec else {**spec, **({"active": False} if not current.active else {})}
            if current.spec != spec:
                self.update(current.id, spec, principal, current.version, deployed=True)
                changed.append(current.id)
        self._backfill_quota_keys()
        return changed

    def _backfill_quota_keys(self) -> None:
        """Items written before the registry kept quota keys get theirs (the scheduler passes it on)."""
        for item in self._items(FilterExpression="attribute_not_exists(quota_key)"):
            try:
                self._client.update_item(
                    TableName=self.table_name, Key={"destination_id": item["destination_id"]},
                    UpdateExpression="SET quota_key = :key", ConditionExpression="version = :version",
                    ExpressionAttributeValues={":key": {"S": self._registered(item).destination.quota_key}, ":version": item["version"]})
            except ClientError as error:   # changed meanwhile: that write set it
                if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise

    def publish(self, config_uri: str, settings_from: str | None = None) -> None:
        """Rewrite the jobs' config file with the registry's destinations, keeping the other
        settings of that file (or of `settings_from`)."""
        text = storage.read_text(settings_from or config_uri)
        raw = (yaml.safe_load(text) if text else None) or {"version": CONFIG_VERSION}
        raw["destinations"] = [r.spec for r in self.list()]
        parse_config(raw, config_uri)   # never publish a file the jobs could not load
        storage.write_text(config_uri, yaml.safe_dump(raw, sort_keys=False))

    def _check_with_others(self, destination_id: str, spec: dict) -> None:
        others = [r.spec for r in self.list() if r.id != destination_id]
        try:
            parse_config({"version": CONFIG_VERSION, "destinations": [*others, spec]}, "registry")
        except ConfigError as error:
            raise Invalid(str(error).replace("registry: destinations: ", "", 1)) from None

    def _write(self, destination_id: str, spec: dict, principal: str, expected_version: int | None) -> Registered:
        version = (expected_version or 0) + 1
        updated_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock()))
        written = Registered(destination_id, spec, version, updated_at, principal)
        item = {"destination_id": {"S": destination_id}, "spec": {"S": json.dumps(spec, sort_keys=True)},
                "active": {"BOOL": written.active}, "quota_key": {"S": written.destination.quota_key},
                "version": {"N": str(version)}, "updated_at": {"S": updated_at}, "updated_by": {"S": principal}}
        if expected_version is None:
            condition = {"ConditionExpression": "attribute_not_exists(destination_id)"}
        else:
            condition = {"ConditionExpression": "version = :expected", "ExpressionAttributeValues": {":expected": {"N": str(expected_version)}}}
        try:
            self._client.put_item(TableName=self.table_name, Item=item, **condition)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            if expected_version is None:
                raise Conflict(f"destination {destination_id!r} is already registered; update it with PUT") from None
            raise StaleVersion(f"destination {destination_id!r} changed while this request was checked; read it and retry") from None
        return written

    @staticmethod
    def _registered(item: dict) -> Registered:
        return Registered(item["destination_id"]["S"], json.loads(item["spec"]["S"]), int(item["version"]["N"]),
                          item["updated_at"]["S"], item["updated_by"]["S"])
