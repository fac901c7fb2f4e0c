"""A Google Data Manager destination's `connection`, and what every one of its requests needs."""
from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import Field, ValidationError, field_validator

from audience_relay.connectors.destinations.connection import Credentials, HttpConnection, Strict
from audience_relay.transforms.contract import OPTIONAL_COLUMNS, REQUIRED_COLUMNS

DIGITS = re.compile(r"[0-9]+")


class ConsentColumn(Strict):
    """A column of the membership input holding the signal per row: `granted`, `denied` or empty
    (unspecified); any other value rejects the row (`invalid_consent`)."""

    column: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]

    @field_validator("column")
    @classmethod
    def _not_a_membership_column(cls, column: str) -> str:
        if column in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
            raise ValueError(f"{column!r} is a membership column of the data contract, not a consent column")
        return column


class GoogleConsent(Strict):
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


class GoogleConnection(HttpConnection):
    # Google's audience reports (`report_base_url`) come from the Google Ads API with its version
    # (https://googleads.googleapis.com/v26, client.py GOOGLE_ADS_API_VERSION), not the Data
    # Manager API, and need its developer token (and a manager account's id, if through one).
    developer_token: Credentials | None = None
    login_customer_id: Annotated[str, Field(pattern=r"^[0-9]{1,20}$")] | None = None
    # The consent for ad user data and ad personalization sent with every ingest (EEA audiences need it).
    consent: GoogleConsent | None = None

    def consent_columns(self) -> dict[str, str]:
        return self.consent.columns() if self.consent else {}


def check_request_contract(destination) -> None:
    """What every Data Manager request needs (Google's reference, "Destination" and
    "ProductAccount"): the operating account's id and each audience's user list id, and a base URL
    the profile's `/v1/audienceMembers:...` paths go under."""
    connection = destination.connection
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
    missing = sorted(set(destination.audiences) - set(connection.audience_ids))
    if missing:
        raise ValueError(f"connection.audience_ids: audiences {missing} have no user list id; Google takes each "
                         "audience's numeric user list id as productDestinationId")
    for audience, list_id in sorted(connection.audience_ids.items()):
        if not DIGITS.fullmatch(list_id):
            raise ValueError(f"connection.audience_ids.{audience}: {list_id!r} is not a user list id (numeric)")
