"""The destinations YAML: loaded once at the edge, validated, and turned into typed objects.

Unknown keys and bad values fail with a `ConfigError` that names the file and the key path
(`destinations[1] (google_dm).max_batch_size: ...`). Credentials are references only.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field, SerializeAsAny, ValidationError, ValidationInfo, field_validator, model_validator

from audience_relay.connectors.destinations.connection import Connection, Credentials, HttpConnection, Strict
from audience_relay.connectors.destinations.registry import PROFILES, REGISTRY
from audience_relay.connectors.profiles import IdentifierRule, Profile
from audience_relay.orchestration.machines.specs import EmrCluster as _EmrDefaults
from audience_relay.pipeline import storage
from audience_relay.transforms.contract import format_of
from audience_relay.transforms.id_types import ID_TYPES
from audience_relay.transforms.phone_regions import region_for_country_code

SAFE_ID = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# Destination ids name state machines, executions (80 characters with the run id) and alert subjects.
DESTINATION_ID = r"^[a-z0-9][a-z0-9_-]{0,31}$"
SAFE_AUDIENCE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
# The engines a destination is delivered by (its profile's kind): an HTTP API, an SFTP drop, S3.
KINDS = tuple(sorted({destination.profile.kind for destination in REGISTRY.values()}))


class ConfigError(ValueError):
    """The destinations config is unreadable or invalid; the message names the file and key."""


class RateLimit(Strict):
    requests_per_minute: Annotated[int, Field(gt=0)]


class DailyQuota(Strict):
    requests: Annotated[int, Field(gt=0)]
    key: Annotated[str, Field(pattern=SAFE_ID)] | None = None


MIRROR_MAX_REMOVE_FRACTION = 0.5   # a day's churn stays far below; a missing segment file is 100 %


class Guards(Strict):
    min_audience_size: Annotated[int, Field(ge=0)] = 0
    # The removal guard: a run that would remove more of an audience than this share of its
    # committed members, or more than `max_removes`, holds those removals until someone approves
    # them (`approve-removals`). Unset: MIRROR_MAX_REMOVE_FRACTION in mirror mode; 1 turns it off.
    # Consent withdrawals are never held.
    max_remove_fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    max_removes: Annotated[int, Field(ge=0)] | None = None
    # `feedback` flags an audience the destination reports matching less of than this share of
    # the ids it was sent (its match rate, or reported size / ids sent).
    min_match_rate: Annotated[float, Field(ge=0, le=1)] | None = None


EMR_DEFAULTS = _EmrDefaults()


class EmrCluster(Strict):
    """The on-demand EMR cluster of `prepare_engine: emr`."""

    release: Annotated[str, Field(pattern=r"^emr-7\.\d+\.\d+$")] = EMR_DEFAULTS.release   # EMR 7: Spark 3.5, as Glue 5.1
    instance_type: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")] = EMR_DEFAULTS.instance_type
    core_instances: Annotated[int, Field(ge=1, le=500)] = EMR_DEFAULTS.core_instances
    idle_timeout_seconds: Annotated[int, Field(ge=60, le=604800)] = EMR_DEFAULTS.idle_timeout_seconds   # EMR's bounds
    subnet_id: Annotated[str, Field(pattern=r"^subnet-[0-9a-f]{8,17}$")] | None = None


class Orchestration(Strict):
    """How the destination's state machine prepares a run on its own (the scheduler prepares once for all)."""

    prepare_engine: Literal["glue", "emr"] = "glue"   # emr: an on-demand cluster created and terminated per run
    transform_job: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,255}$")] | None = None   # an extra Glue job after prepare
    emr: EmrCluster = EmrCluster()


class Destination(Strict):
    """One destination: the keys every destination has, and its `connection`, whose model is its
    profile's (connectors/destinations/<name>/config.py, found through the registry)."""

    id: Annotated[str, Field(pattern=DESTINATION_ID)]
    profile: str
    kind: Literal[KINDS]
    id_types: Annotated[list[Literal["email", "phone", "maid", "external_id"]], Field(min_length=1)] | None = None
    hashing: dict[Literal["email", "phone", "maid", "external_id"], Literal["sha256", "none"]] = {}
    max_batch_size: Annotated[int, Field(gt=0)] | None = None
    rate_limit: RateLimit | None = None
    daily_quota: DailyQuota | None = None
    credentials: Credentials | None = None
    sync_mode: Literal["mirror", "upsert"] = "mirror"
    guards: Guards = Guards()
    active: bool = True
    orchestration: Orchestration = Orchestration()
    connection: SerializeAsAny[Connection] | None = None   # the profile's model: dumped with all its keys
    audiences: dict[Annotated[str, Field(pattern=SAFE_AUDIENCE_ID)], list[str]]

    @field_validator("profile")
    @classmethod
    def _registered(cls, profile: str) -> str:
        if profile not in REGISTRY:
            raise ValueError(f"unknown profile {profile!r}; known: {sorted(REGISTRY)}")
        return profile

    @field_validator("connection", mode="before")
    @classmethod
    def _profiles_connection(cls, value: object, info: ValidationInfo) -> object:
        """Validated with the model of the profile's folder. Without a registered profile (already
        an error on `profile`) there is no model to judge it by."""
        destination_type = REGISTRY.get(info.data.get("profile"))
        if destination_type is None:
            return None
        return destination_type.connection.model_validate(value) if isinstance(value, dict) else value

    @field_validator("audiences")
    @classmethod
    def _one_audience_per_segment(cls, audiences: dict[str, list[str]]) -> dict[str, list[str]]:
        if not audiences:
            raise ValueError("map at least one audience to its segments")
        owner: dict[str, str] = {}
        for audience, segments in audiences.items():
            if not segments:
                raise ValueError(f"audience {audience!r} lists no segments")
            for segment in segments:
                if segment in owner:
                    raise ValueError(
                        f"segment {segment!r} feeds both {owner[segment]!r} and {audience!r}; "
                        "a segment may feed one audience per destination"
                    )
                owner[segment] = audience
        return audiences

    @model_validator(mode="after")
    def _known_audience_ids(self) -> Destination:
        mapped = self.connection.audience_ids if isinstance(self.connection, HttpConnection) else {}
        unknown = sorted(set(mapped) - set(self.audiences))
        if unknown:
            raise ValueError(f"connection.audience_ids: {unknown} are not audiences of this destination")
        return self

    def secret_references(self) -> dict[str, str]:
        """Every Secrets Manager ARN the destination names, by its key."""
        found = {"credentials.secret_arn": self.credentials.secret_arn} if self.credentials and self.credentials.secret_arn else {}
        return {**found, **(self.connection.secret_references() if self.connection else {})}

    @model_validator(mode="after")
    def _within_profile(self) -> Destination:
        profile = PROFILES[self.profile]
        if profile.kind != self.kind:
            raise ValueError(f"profile: {self.profile!r} is a {profile.kind} profile, not {self.kind}")
        if self.max_batch_size is not None and self.max_batch_size > profile.max_batch_size:
            raise ValueError(
                f"max_batch_size: {self.max_batch_size} is above the {self.profile} maximum of {profile.max_batch_size}"
            )
        for id_type in self.id_types or []:
            if id_type not in profile.identifiers:
                raise ValueError(f"id_types: {self.profile} does not accept {id_type!r}")
        for id_type, rule in self.hashing.items():
            if rule == "none" and profile.identifiers.get(id_type, IdentifierRule(True)).hash_sha256:
                raise ValueError(f"hashing.{id_type}: {self.profile} takes {id_type} hashed; it cannot be sent in clear")
        if self.rate_limit and profile.requests_per_minute and self.rate_limit.requests_per_minute > profile.requests_per_minute:
            raise ValueError(
                f"rate_limit.requests_per_minute: {self.rate_limit.requests_per_minute} is above the "
                f"{self.profile} limit of {profile.requests_per_minute}"
            )
        if self.daily_quota and profile.requests_per_day and self.daily_quota.requests > profile.requests_per_day:
            raise ValueError(
                f"daily_quota.requests: {self.daily_quota.requests} is above the {self.profile} limit of {profile.requests_per_day}"
            )
        check = REGISTRY[self.profile].check
        if check is not None:
            check(self)
        return self

    # Derived, typed views the jobs use.
    @property
    def profile_spec(self) -> Profile:
        return PROFILES[self.profile]

    @property
    def batch_size(self) -> int:
        return self.max_batch_size or self.profile_spec.max_batch_size

    @property
    def accepted_id_types(self) -> tuple[str, ...]:
        return tuple(self.id_types or [t for t in ID_TYPES if t in self.profile_spec.identifiers])

    @property
    def quota_key(self) -> str:
        return (self.daily_quota and self.daily_quota.key) or self.id

    @property
    def mapped_segments(self) -> set[str]:
        """Every segment that feeds one of the destination's audiences."""
        return {segment for segments in self.audiences.values() for segment in segments}

    @property
    def max_remove_fraction(self) -> float | None:
        """The removal guard's share in effect: the configured one, else mirror mode's default."""
        if self.guards.max_remove_fraction is not None:
            return self.guards.max_remove_fraction
        return MIRROR_MAX_REMOVE_FRACTION if self.sync_mode == "mirror" else None

    def identifier_rule(self, id_type: str) -> IdentifierRule:
        rule = self.profile_spec.identifiers[id_type]
        if self.hashing.get(id_type) == "sha256" and not rule.hash_sha256:
            return IdentifierRule(True, rule.phone_with_plus, rule.gmail_canonical)
        return rule


class RowCountBand(Strict):
    """Today's input row count must lie within [min_ratio, max_ratio] x the previous run's."""

    min_ratio: Annotated[float, Field(ge=0)] = 0.5
    max_ratio: Annotated[float, Field(gt=0)] = 2.0


class Quality(Strict):
    max_null_fraction: Annotated[float, Field(ge=0, le=1)] = 0.01
    max_unknown_id_type_fraction: Annotated[float, Field(ge=0, le=1)] = 0.01
    max_rejected_fraction: Annotated[float, Field(ge=0, le=1)] = 0.2
    row_count_band: RowCountBand | None = RowCountBand()  # null turns the check off
    # Per destination, the share of its rows this run's consent opts out may exceed the last
    # run's by at most this much (0.1: ten points); a broken consent file would otherwise
    # withdraw, and remove, whole audiences. Null turns the check off.
    max_opt_out_increase: Annotated[float, Field(ge=0, le=1)] | None = 0.1


class Defaults(Strict):
    # Phone numbers written without a country code are read in this code's main region (1 → US).
    default_country_code: Annotated[str, Field(pattern=r"^[1-9][0-9]{0,2}$")] = "1"
    # Committed snapshots kept per destination (under snapshots/<id>/<run>/, outside the expiring
    # runs/): the current one, and older ones to restore from by hand.
    snapshots_kept: Annotated[int, Field(ge=1)] = 3

    @field_validator("default_country_code")
    @classmethod
    def _has_region(cls, code: str) -> str:
        region_for_country_code(code)  # a ValueError naming the code becomes an error on this key
        return code


S3_FOLDER = r"^([A-Za-z0-9_=.-]+/)+$"
MAX_COPY_BYTES = 5 * 1024**3   # one CopyObject call copies at most 5 GiB


class Ingest(Strict):
    """How files landing under the input bucket's prefix start runs (orchestration/ingest*.py).

    `marker`: a folder is an input once its `_SUCCESS` marker lands, one run per marker.
    `window`: every file whose name ends in `suffix` is checked on its own, and the files of one
    window (up to `window_files`, gathered for up to `window_seconds`) become one run.
    """

    mode: Literal["marker", "window"] = "marker"
    prefix: Annotated[str, Field(pattern=S3_FOLDER)] = "incoming/"
    suffix: Annotated[str, Field(pattern=r"^[.][A-Za-z0-9.]{1,20}$")] = ".csv.gz"
    window_files: Annotated[int, Field(ge=1, le=10_000)] = 100       # Lambda's SQS BatchSize bounds
    window_seconds: Annotated[int, Field(ge=0, le=300)] = 60         # MaximumBatchingWindowInSeconds bounds
    max_file_bytes: Annotated[int, Field(ge=1, le=MAX_COPY_BYTES)] = 1024**3
    quarantine_prefix: Annotated[str, Field(pattern=S3_FOLDER)] = "quarantine/"

    @model_validator(mode="after")
    def _consistent(self) -> Ingest:
        if format_of("file" + self.suffix) is None:
            raise ValueError(f"suffix: {self.suffix!r} names no input format: use .parquet, .csv, .jsonl, .ndjson or .json, "
                             "optionally followed by .gz")
        if self.quarantine_prefix.startswith(self.prefix) or self.prefix.startswith(self.quarantine_prefix):
            raise ValueError(f"quarantine_prefix: {self.quarantine_prefix!r} and prefix {self.prefix!r} overlap: a "
                             "quarantined file would be ingested again")
        if self.window_files > 10 and self.window_seconds < 1:
            raise ValueError("window_seconds: must be at least 1 when window_files is above 10 (Lambda's SQS batching rule)")
        return self


class Config(Strict):
    version: Literal[1]
    defaults: Defaults = Defaults()
    quality: Quality = Quality()
    ingest: Ingest = Ingest()
    destinations: list[Destination]

    @model_validator(mode="after")
    def _windows_add_only(self) -> Config:
        """A window holds some of the day's files, not all of it: mirror mode would remove everyone
        missing from it, and the row count band would compare windows of any size."""
        if self.ingest.mode != "window":
            return self
        mirrored = [d.id for d in self.destinations if d.sync_mode == "mirror"]
        if mirrored:
            raise ValueError(f"ingest.mode: window makes each window a run of some files: destinations {mirrored} have "
                             "sync_mode mirror, which would remove everyone missing from a window; set sync_mode: upsert")
        if self.quality.row_count_band is not None:
            raise ValueError("quality.row_count_band: with ingest.mode window it compares a run's rows with the previous run's, "
                             "and windows differ in size by design; set it to null")
        return self

    @field_validator("destinations")
    @classmethod
    def _unique_ids(cls, destinations: list) -> list:
        if not destinations:
            raise ValueError("configure at least one destination")
        seen: set[str] = set()
        quota_limits: dict[str, tuple[str, int]] = {}
        for destination in destinations:
            if destination.id in seen:
                raise ValueError(f"destination id {destination.id!r} appears twice")
            seen.add(destination.id)
            if destination.daily_quota:
                first = quota_limits.setdefault(destination.quota_key, (destination.id, destination.daily_quota.requests))
                if first[1] != destination.daily_quota.requests:
                    raise ValueError(
                        f"daily_quota key {destination.quota_key!r} is shared by {first[0]!r} ({first[1]} requests) and "
                        f"{destination.id!r} ({destination.daily_quota.requests}); a shared quota has one limit"
                    )
        return destinations

    @property
    def active_destinations(self) -> list[Destination]:
        return [d for d in self.destinations if d.active]

    def consent_sources(self) -> dict[str, dict[str, str]]:
        """Active destination id -> {consent signal: input column} for signals read from the input."""
        sources = {}
        for destination in self.active_destinations:
            columns = destination.connection.consent_columns() if destination.connection else {}
            if columns:
                sources[destination.id] = columns
        return sources

    @property
    def consent_columns(self) -> tuple[str, ...]:
        """The input columns the active destinations read consent from, sorted."""
        return tuple(sorted({column for columns in self.consent_sources().values() for column in columns.values()}))

    def restricted_to(self, ids: list[str]) -> Config:
        """The same config with only these destinations (a destination's own prepare run)."""
        active = {d.id for d in self.active_destinations}
        unknown = sorted(set(ids) - active)
        if unknown or not ids:
            raise ConfigError(f"destinations {unknown or ids} are not among the active destinations {sorted(active)}")
        return self.model_copy(update={"destinations": [d for d in self.destinations if d.id in ids]})


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a config must not."""

    def construct_mapping(self, node, deep=False):  # noqa: ANN001 - PyYAML's signature
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _key_path(raw: dict, loc: tuple) -> str:
    """Render pydantic's error location as a key path, naming destinations by their id."""
    parts: list[str] = []
    node = raw
    for item in loc:
        if isinstance(item, int):
            name = node[item].get("id") if isinstance(node, list) and item < len(node) and isinstance(node[item], dict) else None
            parts[-1] += f"[{item}]" + (f" ({name})" if name else "")
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts)


def parse_config(raw: object, source: str) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        lines = []
        for detail in error.errors():
            message = detail["msg"].removeprefix("Value error, ")
            where = _key_path(raw, detail["loc"]) or "(top level)"
            if detail["type"] == "extra_forbidden":
                message = "unknown key"
            # A check across keys says which key it is about ("max_batch_size: 20000 is above ..."):
            # part of the path.
            own_key = re.match(r"^([a-z_]+(\.[a-z_]+)*): ", message) if detail["type"] == "value_error" else None
            if own_key:
                where = own_key.group(1) if where == "(top level)" else f"{where}.{own_key.group(1)}"
                message = message[own_key.end():]
            lines.append(f"{source}: {where}: {message}")
        raise ConfigError("\n".join(lines)) from None


def load_config(path: str | Path) -> Config:
    """Load a config from a local path or an `s3://` URI (Glue and EMR jobs keep it in S3)."""
    path = str(path)
    try:
        text = storage.read_text(path)
    except (OSError, UnicodeDecodeError, BotoCoreError, ClientError) as error:
        raise ConfigError(f"{path}: cannot read config: {error}") from None
    if text is None:
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return parse_config(raw, str(path))


DEFAULT_CONFIG = Path(__file__).parent / "defaults" / "destinations.yaml"
