"""The destinations YAML: loaded once at the edge, validated, and turned into typed objects.

Unknown keys and bad values fail with a `ConfigError` that names the file and the key path
(`destinations[1] (google_dm).max_batch_size: ...`). Credentials are references only.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Union
from urllib.parse import urlparse

import yaml
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from audience_relay.connectors.destinations.registry import PROFILES
from audience_relay.connectors.profiles import IdentifierRule, Profile
from audience_relay.orchestration.machines.specs import EmrCluster as _EmrDefaults
from audience_relay.pipeline import storage
from audience_relay.transforms.contract import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, format_of
from audience_relay.transforms.id_types import ID_TYPES
from audience_relay.transforms.phone_regions import region_for_country_code

SAFE_ID = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# Destination ids name state machines, executions (80 characters with the run id) and alert subjects.
DESTINATION_ID = r"^[a-z0-9][a-z0-9_-]{0,31}$"
SAFE_AUDIENCE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
ENV_NAME = r"^[A-Z_][A-Z0-9_]{0,127}$"
SECRET_ARN = r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+$"


class ConfigError(ValueError):
    """The destinations config is unreadable or invalid; the message names the file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Credentials(_Strict):
    """Where a secret lives: an environment variable or a Secrets Manager ARN, never inline."""

    env: Annotated[str, Field(pattern=ENV_NAME)] | None = None
    secret_arn: Annotated[str, Field(pattern=SECRET_ARN)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Credentials:
        if (self.env is None) == (self.secret_arn is None):
            raise ValueError("give exactly one of `env` or `secret_arn`")
        return self


class RateLimit(_Strict):
    requests_per_minute: Annotated[int, Field(gt=0)]


class DailyQuota(_Strict):
    requests: Annotated[int, Field(gt=0)]
    key: Annotated[str, Field(pattern=SAFE_ID)] | None = None


MIRROR_MAX_REMOVE_FRACTION = 0.5   # a day's churn stays far below; a missing segment file is 100 %


class Guards(_Strict):
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


class ConsentColumn(_Strict):
    """A column of the membership input holding the signal per row: `granted`, `denied` or empty
    (unspecified); any other value rejects the row (`invalid_consent`)."""

    column: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]

    @field_validator("column")
    @classmethod
    def _not_a_membership_column(cls, column: str) -> str:
        if column in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
            raise ValueError(f"{column!r} is a membership column of the data contract, not a consent column")
        return column


class GoogleConsent(_Strict):
    """The users' consent Google's EU user consent policy asks for: one value for every member
    (sent with each request) or, per signal, a column of the input (sent with each member)."""

    ad_user_data: Literal["granted", "denied"] | ConsentColumn
    ad_personalization: Literal["granted", "denied"] | ConsentColumn

    @field_validator("ad_user_data", "ad_personalization", mode="before")
    @classmethod
    def _one_of_the_forms(cls, value: object) -> object:
        """One error naming the key, rather than one per form the value fails to be."""
        if isinstance(value, dict):
            try:
                return ConsentColumn.model_validate(value)
            except ValidationError as error:
                detail = error.errors()[0]
                where = ".".join(str(part) for part in detail["loc"])
                raise ValueError(f"{where + ': ' if where else ''}{detail['msg'].removeprefix('Value error, ')}") from None
        if value not in ("granted", "denied"):
            raise ValueError(f"{value!r}: give granted, denied or {{column: <membership input column>}}")
        return value

    def columns(self) -> dict[str, str]:
        """Signal -> input column, for the signals read from the input."""
        return {signal: value.column for signal, value in (("ad_user_data", self.ad_user_data),
                                                           ("ad_personalization", self.ad_personalization))
                if isinstance(value, ConsentColumn)}


class HttpConnection(_Strict):
    base_url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    account_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None   # goes into URL paths
    # Where the audience reports are read (`feedback`), when not at base_url: Google's come from
    # the Google Ads API with its version (https://googleads.googleapis.com/v26, connectors/destinations/google/client.py GOOGLE_ADS_API_VERSION), not the Data
    # Manager API, and need its developer token (and a manager account's id, if through one).
    report_base_url: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None
    developer_token: Credentials | None = None
    # Meta: the app's secret (`env` or `secret_arn`) when the app requires an appsecret_proof with every call.
    app_secret: Credentials | None = None
    # Google: the consent for ad user data and ad personalization sent with every ingest (EEA audiences need it).
    consent: GoogleConsent | None = None
    login_customer_id: Annotated[str, Field(pattern=r"^[0-9]{1,20}$")] | None = None
    # The API's own id of each audience (Meta custom audience id, Google user list id);
    # audiences not listed are sent under their configured name.
    # One URL path segment (Meta puts it in the path): never `.` or `..`.
    audience_ids: dict[str, Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]] = {}
    # How long one request may take (connect and read); a timed-out batch is retried.
    timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 30.0


def _folder(value: str, what: str) -> str:
    """A folder batch files are written under (the root of what we write): no `.`, `..` or empty segment."""
    inner = value.strip("/").split("/") if value.strip("/") else []
    if any(part in ("", ".", "..") for part in inner) or any(ord(c) < 32 for c in value) or "\\" in value:
        raise ValueError(f"{what} {value!r} may not hold '.', '..' or empty segments, backslashes or control characters")
    return value


class SftpConnection(_Strict):
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
        return _folder(value, "remote_dir")


class S3Connection(_Strict):
    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    prefix: str = ""
    kms_key_id: str | None = None

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _folder(value, "prefix")


EMR_DEFAULTS = _EmrDefaults()


class EmrCluster(_Strict):
    """The on-demand EMR cluster of `prepare_engine: emr`."""

    release: Annotated[str, Field(pattern=r"^emr-7\.\d+\.\d+$")] = EMR_DEFAULTS.release   # EMR 7: Spark 3.5, as Glue 5.1
    instance_type: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")] = EMR_DEFAULTS.instance_type
    core_instances: Annotated[int, Field(ge=1, le=500)] = EMR_DEFAULTS.core_instances
    idle_timeout_seconds: Annotated[int, Field(ge=60, le=604800)] = EMR_DEFAULTS.idle_timeout_seconds   # EMR's bounds
    subnet_id: Annotated[str, Field(pattern=r"^subnet-[0-9a-f]{8,17}$")] | None = None


class Orchestration(_Strict):
    """How the destination's state machine prepares a run on its own (the scheduler prepares once for all)."""

    prepare_engine: Literal["glue", "emr"] = "glue"   # emr: an on-demand cluster created and terminated per run
    transform_job: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,255}$")] | None = None   # an extra Glue job after prepare
    emr: EmrCluster = EmrCluster()


class _DestinationBase(_Strict):
    id: Annotated[str, Field(pattern=DESTINATION_ID)]
    profile: str
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
    audiences: dict[Annotated[str, Field(pattern=SAFE_AUDIENCE_ID)], list[str]]

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
    def _known_audience_ids(self) -> _DestinationBase:
        mapped = getattr(getattr(self, "connection", None), "audience_ids", {}) or {}
        unknown = sorted(set(mapped) - set(self.audiences))
        if unknown:
            raise ValueError(f"connection.audience_ids: {unknown} are not audiences of this destination")
        return self

    def secret_references(self) -> dict[str, str]:
        """Every Secrets Manager ARN the destination names, by its key."""
        connection = getattr(self, "connection", None)
        found = {"credentials.secret_arn": self.credentials.secret_arn if self.credentials else None}
        for key in ("developer_token", "app_secret"):
            reference = getattr(connection, key, None)
            found[f"connection.{key}.secret_arn"] = reference.secret_arn if reference else None
        return {key: arn for key, arn in found.items() if arn}

    @model_validator(mode="after")
    def _within_profile(self) -> _DestinationBase:
        profile = PROFILES.get(self.profile)
        if profile is None:
            raise ValueError(f"profile: unknown profile {self.profile!r}; known: {sorted(PROFILES)}")
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


DIGITS = re.compile(r"[0-9]+")


class HttpDestination(_DestinationBase):
    kind: Literal["http_api"]
    connection: HttpConnection | None = None

    @model_validator(mode="after")
    def _google_request_contract(self) -> HttpDestination:
        """What every Data Manager request needs (Google's reference, "Destination" and
        "ProductAccount"): the operating account's id and each audience's user list id, and a
        base URL the profile's `/v1/audienceMembers:...` paths go under."""
        if self.profile != "google_data_manager":
            if self.connection is not None and self.connection.consent is not None:
                raise ValueError(f"connection.consent: {self.profile} takes no consent field; it is Google's")
            return self
        connection = self.connection
        if connection is None:
            raise ValueError("connection: google_data_manager needs base_url, account_id and audience_ids")
        if urlparse(connection.base_url).path.strip("/"):
            raise ValueError(f"connection.base_url: {connection.base_url} has a path; give the API root "
                             "(https://datamanager.googleapis.com): requests go to <root>/v1/audienceMembers:ingest")
        if connection.account_id is None:
            raise ValueError("connection.account_id: required for google_data_manager: the Google Ads customer id "
                             "(digits) that holds the audiences, sent as operatingAccount.accountId")
        if not DIGITS.fullmatch(connection.account_id):
            raise ValueError(f"connection.account_id: {connection.account_id!r}: a Google Ads customer id is digits only, without dashes")
        missing = sorted(set(self.audiences) - set(connection.audience_ids))
        if missing:
            raise ValueError(f"connection.audience_ids: audiences {missing} have no user list id; Google takes each "
                             "audience's numeric user list id as productDestinationId")
        for audience, list_id in sorted(connection.audience_ids.items()):
            if not DIGITS.fullmatch(list_id):
                raise ValueError(f"connection.audience_ids.{audience}: {list_id!r} is not a user list id (numeric)")
        return self


class SftpDestination(_DestinationBase):
    kind: Literal["sftp"]
    connection: SftpConnection | None = None


class S3Destination(_DestinationBase):
    kind: Literal["s3"]
    connection: S3Connection | None = None


Destination = Annotated[Union[HttpDestination, SftpDestination, S3Destination], Field(discriminator="kind")]


class RowCountBand(_Strict):
    """Today's input row count must lie within [min_ratio, max_ratio] x the previous run's."""

    min_ratio: Annotated[float, Field(ge=0)] = 0.5
    max_ratio: Annotated[float, Field(gt=0)] = 2.0


class Quality(_Strict):
    max_null_fraction: Annotated[float, Field(ge=0, le=1)] = 0.01
    max_unknown_id_type_fraction: Annotated[float, Field(ge=0, le=1)] = 0.01
    max_rejected_fraction: Annotated[float, Field(ge=0, le=1)] = 0.2
    row_count_band: RowCountBand | None = RowCountBand()  # null turns the check off
    # Per destination, the share of its rows this run's consent opts out may exceed the last
    # run's by at most this much (0.1: ten points); a broken consent file would otherwise
    # withdraw, and remove, whole audiences. Null turns the check off.
    max_opt_out_increase: Annotated[float, Field(ge=0, le=1)] | None = 0.1


class Defaults(_Strict):
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


class Ingest(_Strict):
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


class Config(_Strict):
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
    def active_destinations(self) -> list[HttpDestination | SftpDestination | S3Destination]:
        return [d for d in self.destinations if d.active]

    def consent_sources(self) -> dict[str, dict[str, str]]:
        """Active destination id -> {consent signal: input column} for signals read from the input."""
        sources = {}
        for destination in self.active_destinations:
            consent = destination.connection.consent if isinstance(destination, HttpDestination) and destination.connection else None
            if consent is not None and consent.columns():
                sources[destination.id] = consent.columns()
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
        elif item in ("http_api", "sftp", "s3") and parts and parts[-1].startswith("destinations["):
            continue  # the discriminator tag pydantic inserts is noise to a reader
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
