"""Google Data Manager requests checked against Google's own artefacts, offline.

The reference is the API description google-api-python-client ships (its static discovery
document `datamanager.v1.json`) and the client Google's library builds from it: our request's
method and URL must be the ones that client sends, and our body must validate against the
description's schemas (no unknown field, enums among the listed values). The shipped description
leaves the fields' descriptions out, so which fields are required is taken from Google's reference
pages ("Destination" and "ProductAccount" in the Data Manager API reference: `operatingAccount`,
`productDestinationId`, `accountId` and `accountType` are "Required"; "IngestAudienceMembersRequest":
`destinations` and `audienceMembers`); a required string must not be empty (an empty proto3
string is unset).
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import googleapiclient
import jsonschema
import pytest
import requests
import yaml
from google.auth.credentials import AnonymousCredentials
from googleapiclient.discovery import build

from audience_relay.connectors.destination import Batch
from audience_relay.connectors.state.store import BatchRecord
from audience_relay.pipeline.config import DEFAULT_CONFIG, ConfigError, parse_config
from audience_relay.pipeline.destinations import build_destination
from tests.unit.connectors.recording import Recording

DESCRIPTION = json.loads((Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "datamanager.v1.json").read_text())
REQUIRED = {
    "IngestAudienceMembersRequest": ["destinations", "audienceMembers"],
    "RemoveAudienceMembersRequest": ["destinations", "audienceMembers"],
    "Destination": ["operatingAccount", "productDestinationId"],
    "ProductAccount": ["accountId", "accountType"],
}
EXAMPLE = yaml.safe_load(DEFAULT_CONFIG.read_text())


def _json_schema(node: dict) -> dict:
    """A discovery-document schema as JSON Schema: closed objects, enums, the required fields above."""
    if "$ref" in node:
        return {"$ref": f"#/definitions/{node['$ref']}"}
    converted: dict = {}
    if node.get("type") not in (None, "any"):
        converted["type"] = node["type"]
    if "enum" in node:
        converted["enum"] = node["enum"]
    if "items" in node:
        converted["items"] = _json_schema(node["items"])
    if "properties" in node:
        converted["properties"] = {name: _json_schema(field) for name, field in node["properties"].items()}
        converted["additionalProperties"] = False
        required = REQUIRED.get(node.get("id"), [])
        converted["required"] = required
        for name in required:
            if node["properties"][name].get("type") == "string":
                converted["properties"][name]["minLength"] = 1
    return converted


def _validate(body: dict, schema: str) -> None:
    definitions = {name: _json_schema(node) for name, node in DESCRIPTION["schemas"].items()}
    jsonschema.validate(body, {"$ref": f"#/definitions/{schema}", "definitions": definitions})
    unspecified = [value for value in _strings(body) if value.endswith("_UNSPECIFIED")]
    assert not unspecified, f"enum values left unspecified: {unspecified}"


def _strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return [value] if isinstance(value, str) else []


def _google(raw: dict) -> dict:
    (google,) = [d for d in raw["destinations"] if d["profile"] == "google_data_manager"]
    return google


def _sent(raw: dict, op: str, monkeypatch, member_consent: dict | None = None) -> requests.PreparedRequest:
    """The request our connector sends for a batch of the example's first Google audience."""
    raw = copy.deepcopy(raw)
    _google(raw)["credentials"] = {"env": "GOOGLE_DM_TOKEN"}
    monkeypatch.setenv("GOOGLE_DM_TOKEN", "ya29.test-token")
    destination_config = next(d for d in parse_config(raw, "destinations.yaml").destinations if d.profile == "google_data_manager")
    audience = sorted(destination_config.audiences)[0]
    members = sorted([("email", hashlib.sha256(b"ada@example.com").hexdigest()), ("phone", hashlib.sha256(b"+14155550132").hexdigest())])
    record = BatchRecord("r1", destination_config.id, audience, op, 0, "c" * 64, len(members))
    destination, recording = build_destination(destination_config), Recording({"requestId": "r-1"})
    destination.open()
    destination._session.mount("https://", recording)
    destination.send(Batch(record, members, member_consent=member_consent or {}))
    (sent,) = recording.sent
    return sent


def _googles_own(method: str, body: dict):
    """The request Google's client, built from the description it ships, makes of the same body."""
    service = build("datamanager", "v1", credentials=AnonymousCredentials(), static_discovery=True)
    return getattr(service.audienceMembers(), method)(body=body)


@pytest.mark.parametrize("op, method, schema", [("add", "ingest", "IngestAudienceMembersRequest"),
                                                ("remove", "remove", "RemoveAudienceMembersRequest")])
def test_the_shipped_config_sends_what_googles_client_sends_and_the_description_accepts(op, method, schema, monkeypatch):
    sent = _sent(EXAMPLE, op, monkeypatch)
    body = json.loads(sent.body)
    own = _googles_own(method, body)
    # Google's client adds `alt=json`, the API's default response format, and nothing else.
    assert (sent.method, sent.url) == (own.method, own.uri.removesuffix("?alt=json"))
    _validate(body, schema)
    assert sent.headers["Authorization"] == "Bearer ya29.test-token"


def test_the_description_check_refuses_what_google_would():
    """The check itself: an empty account id, an unknown field and an unknown enum value fail it."""
    good = {"destinations": [{"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "1234567890"},
                              "productDestinationId": "5550001"}],
            "audienceMembers": [{"userData": {"userIdentifiers": [{"emailAddress": "a" * 64}]}}], "encoding": "HEX"}
    _validate(good, "IngestAudienceMembersRequest")
    for spoil in (lambda b: b["destinations"][0]["operatingAccount"].update(accountId=""),
                  lambda b: b["audienceMembers"][0]["userData"].update(email="x"),
                  lambda b: b.update(encoding="HEXADECIMAL"),
                  lambda b: b["destinations"][0].pop("productDestinationId")):
        spoiled = copy.deepcopy(good)
        spoil(spoiled)
        with pytest.raises(jsonschema.ValidationError):
            _validate(spoiled, "IngestAudienceMembersRequest")


def _refused(change) -> str:
    raw = copy.deepcopy(EXAMPLE)
    change(_google(raw))
    with pytest.raises(ConfigError) as error:
        parse_config(raw, "destinations.yaml")
    return str(error.value)


def test_a_google_destination_without_an_account_id_is_refused_naming_the_key():
    message = _refused(lambda google: google["connection"].pop("account_id", None))
    assert "(google_dm).connection.account_id" in message and "required" in message


def test_a_google_account_id_that_is_not_a_customer_id_is_refused():
    message = _refused(lambda google: google["connection"].update(account_id="123-456-7890"))
    assert "(google_dm).connection.account_id" in message and "digits" in message


def test_a_google_audience_without_a_numeric_user_list_id_is_refused_naming_it():
    message = _refused(lambda google: google["connection"].update(audience_ids={}))
    assert "(google_dm).connection.audience_ids" in message and "google_high_value" in message
    message = _refused(lambda google: google["connection"].update(
        audience_ids={name: "google_high_value" for name in google["audiences"]}))
    assert "(google_dm).connection.audience_ids.google_high_value" in message and "numeric" in message


def test_a_google_base_url_with_a_version_path_is_refused():
    """The profile adds `/v1/audienceMembers:ingest`: a `/v1` in the base doubles it (404, every batch dead-lettered)."""
    message = _refused(lambda google: google["connection"].update(base_url="https://datamanager.googleapis.com/v1"))
    assert "(google_dm).connection.base_url" in message and "https://datamanager.googleapis.com" in message


def test_consent_the_config_gives_is_sent_with_every_ingest_as_the_description_spells_it(monkeypatch):
    """EEA audiences need the users' consent for ad user data and ad personalization (Google's
    EU user consent policy); the destination says it once, for every member it sends."""
    raw = copy.deepcopy(EXAMPLE)
    _google(raw)["connection"]["consent"] = {"ad_user_data": "granted", "ad_personalization": "denied"}
    body = json.loads(_sent(raw, "add", monkeypatch).body)
    assert body["consent"] == {"adUserData": "CONSENT_GRANTED", "adPersonalization": "CONSENT_DENIED"}
    _validate(body, "IngestAudienceMembersRequest")
    assert "consent" not in json.loads(_sent(raw, "remove", monkeypatch).body)   # RemoveAudienceMembersRequest has none


def test_consent_from_input_columns_goes_with_each_member_as_the_description_spells_it(monkeypatch):
    """A signal read from the input travels per member (AudienceMember.consent); the config's fixed
    signal is filled in beside it, and a signal the input left blank is left out (unspecified)."""
    raw = copy.deepcopy(EXAMPLE)
    _google(raw)["connection"]["consent"] = {"ad_user_data": {"column": "eea_data"}, "ad_personalization": "granted"}
    email, phone = hashlib.sha256(b"ada@example.com").hexdigest(), hashlib.sha256(b"+14155550132").hexdigest()
    body = json.loads(_sent(raw, "add", monkeypatch, {("email", email): ("denied", None)}).body)
    _validate(body, "IngestAudienceMembersRequest")
    assert "consent" not in body
    by_key = {m["userData"]["userIdentifiers"][0].popitem()[1]: m.get("consent") for m in body["audienceMembers"]}
    assert by_key == {email: {"adUserData": "CONSENT_DENIED", "adPersonalization": "CONSENT_GRANTED"},
                      phone: {"adPersonalization": "CONSENT_GRANTED"}}
    removal = json.loads(_sent(raw, "remove", monkeypatch, {("email", email): ("denied", None)}).body)
    _validate(removal, "RemoveAudienceMembersRequest")
    assert all("consent" not in m for m in removal["audienceMembers"])


def test_consent_is_refused_where_the_platform_takes_none():
    raw = copy.deepcopy(EXAMPLE)
    (meta,) = [d for d in raw["destinations"] if d["profile"] == "meta_custom_audiences"]
    meta["connection"]["consent"] = {"ad_user_data": "granted", "ad_personalization": "granted"}
    with pytest.raises(ConfigError, match=r"\(meta_ads\)\.connection\.consent"):
        parse_config(raw, "destinations.yaml")
