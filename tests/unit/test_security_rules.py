"""Identifiers leave hashed whenever the destination takes hashes: no config can say otherwise.

For every profile in `connectors.profiles` and every id type it takes hashed, a destination's
`hashing` cannot send that id type in clear, and whatever else the config says, the rule prepare
applies (`identifier_rule`, then the audience mapping) hashes it. An id type a profile takes in
clear may be hashed by config, never the reverse.
"""
from __future__ import annotations

import pytest

from audience_relay.connectors.destinations.registry import PROFILES
from audience_relay.pipeline.config import ConfigError, parse_config
from audience_relay.transforms.id_types import ID_TYPES
from tests.integration.platforms import PLATFORMS

CONNECTIONS = {
    "http_api": {"base_url": "https://api.example.com/v1"},   # Meta's: a version path
    "sftp": {"host": "sftp.example.com", "username": "relay", "remote_dir": "/in", "known_hosts": "/etc/relay/known_hosts"},
    "s3": {"bucket": "partner-drop"},
}
HASHED = [(p.name, t) for p in PROFILES.values() for t, rule in p.identifiers.items() if rule.hash_sha256]
CLEAR = [(p.name, t) for p in PROFILES.values() for t, rule in p.identifiers.items() if not rule.hash_sha256]
NOT_TAKEN = [(p.name, t) for p in PROFILES.values() for t in ID_TYPES if t not in p.identifiers]


# What each ad platform's requests need beyond the kind's connection (its folder's check).
PLATFORM_CONNECTIONS = {
    "google_data_manager": {"base_url": "https://datamanager.googleapis.com", "account_id": "1234567890"},
    **{profile: connection for profile, connection in PLATFORMS.values()},
}
NAMED_AUDIENCES = {"google_data_manager", "pinterest_customer_lists"}   # every audience's platform id required
ONE_ID_TYPE = {"pinterest_customer_lists"}                               # a destination names exactly one id type


def _connection(profile: str, audiences: dict) -> dict:
    """The kind's connection, or the platform's with a numeric platform id per audience where it needs them."""
    if profile not in PLATFORM_CONNECTIONS:
        return CONNECTIONS[PROFILES[profile].kind]
    ids = {"audience_ids": {name: str(5550001 + i) for i, name in enumerate(sorted(audiences))}} if profile in NAMED_AUDIENCES else {}
    return {**PLATFORM_CONNECTIONS[profile], **ids}


def id_type_choices(profile: str, id_type: str) -> tuple:
    """`id_types` to try: left out (every type the profile takes), and just this one."""
    return ([id_type],) if profile in ONE_ID_TYPE else (None, [id_type])


def config(profile: str, **destination) -> dict:
    audiences = destination.pop("audiences", {"aud": ["seg_1"]})
    return {"version": 1, "destinations": [{
        "id": "dest", "kind": PROFILES[profile].kind, "profile": profile, "credentials": {"env": "TOKEN"},
        "connection": _connection(profile, audiences), "audiences": audiences, **destination,
    }]}


def parsed(profile: str, **destination):
    return parse_config(config(profile, **destination), "destinations.yaml").destinations[0]


def test_every_profile_id_type_pair_is_covered():
    assert HASHED and CLEAR
    assert len(HASHED) + len(CLEAR) == sum(len(p.identifiers) for p in PROFILES.values())


def test_emails_and_phones_leave_hashed_for_every_profile():
    for profile in PROFILES.values():
        for id_type in ("email", "phone"):
            assert id_type not in profile.identifiers or profile.identifiers[id_type].hash_sha256, (profile.name, id_type)


@pytest.mark.parametrize("profile,id_type", HASHED)
def test_an_id_type_the_profile_takes_hashed_cannot_be_configured_in_clear(profile, id_type):
    for id_types in id_type_choices(profile, id_type):
        with pytest.raises(ConfigError) as refused:
            parse_config(config(profile, hashing={id_type: "none"}, **({"id_types": id_types} if id_types else {})), "destinations.yaml")
        assert f"dest).hashing.{id_type}" in str(refused.value) and "cannot be sent in clear" in str(refused.value)


@pytest.mark.parametrize("profile,id_type", HASHED)
def test_an_id_type_the_profile_takes_hashed_is_hashed_whatever_the_config_says(profile, id_type):
    for hashing in ({}, {id_type: "sha256"}):
        for id_types in id_type_choices(profile, id_type):
            destination = parsed(profile, hashing=hashing, **({"id_types": id_types} if id_types else {}))
            assert id_type in destination.accepted_id_types
            assert destination.identifier_rule(id_type).hash_sha256


@pytest.mark.parametrize("profile,id_type", CLEAR)
def test_an_id_type_the_profile_takes_in_clear_may_be_hashed_but_not_the_reverse(profile, id_type):
    assert not parsed(profile).identifier_rule(id_type).hash_sha256
    assert not parsed(profile, hashing={id_type: "none"}).identifier_rule(id_type).hash_sha256
    assert parsed(profile, hashing={id_type: "sha256"}).identifier_rule(id_type).hash_sha256


@pytest.mark.parametrize("profile,id_type", NOT_TAKEN)
def test_an_id_type_the_profile_does_not_take_cannot_be_configured_in_clear(profile, id_type):
    with pytest.raises(ConfigError, match=f"hashing.{id_type}"):
        parse_config(config(profile, hashing={id_type: "none"}), "destinations.yaml")
    with pytest.raises(ConfigError, match="id_types"):
        parse_config(config(profile, id_types=[id_type]), "destinations.yaml")


def test_the_audience_mapping_prepare_joins_hashes_every_hashed_pair(spark):
    from audience_relay.pipeline.prepare import audience_mapping

    destinations = [
        {**config(profile, audiences={f"aud{i}": [f"seg_{i}"]})["destinations"][0], "id": f"d{i}",
         "hashing": {t: "sha256" for t, rule in PROFILES[profile].identifiers.items() if not rule.hash_sha256 and i % 2},
         **({"id_types": [sorted(PROFILES[profile].identifiers)[i // len(PROFILES)]]} if profile in ONE_ID_TYPE else {})}
        for i, profile in enumerate(sorted(PROFILES) * 2)   # a one-type profile: its first copy the first type, its second the second
    ]
    parsed_config = parse_config({"version": 1, "destinations": destinations}, "destinations.yaml")
    profiles = {d.id: d.profile for d in parsed_config.destinations}
    rows = audience_mapping(spark, parsed_config).collect()
    assert {(profiles[r.destination_id], r.id_type) for r in rows} == set(HASHED) | set(CLEAR)
    for row in rows:
        if (profiles[row.destination_id], row.id_type) in HASHED:
            assert row.hash_sha256, (row.destination_id, row.id_type)


# --- what a destination's error answer may leave in the ledger, dead letters and outcomes ----------

def test_an_error_answer_is_stored_without_the_ids_it_quotes():
    from audience_relay.connectors.http.client import REDACTED, redact

    maid, hashed = "6d92078a-8246-4ba4-ae5b-76104861e7dc", "ab" * 32
    answer = {"error": {
        "code": 100, "message": f"(#100) Invalid entries, for example {maid.upper()}",
        "error_data": {"invalid_entry_samples": {maid: "invalid MADID", hashed: "invalid EMAIL"}},
        "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest", "description": "x canary.person+tag@example.com y"}],
    }}
    cleaned = redact(answer, [maid, hashed, "unrelated-id"])
    text = repr(cleaned).lower()
    assert maid not in text and maid.replace("-", "") not in text and hashed not in text and "canary.person" not in text
    assert cleaned["error"]["code"] == 100 and cleaned["error"]["message"] == f"(#100) Invalid entries, for example {REDACTED}"
    assert cleaned["error"]["details"][0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"  # what classifies stays


def test_an_error_answer_without_ids_is_kept_as_it_is():
    from audience_relay.connectors.http.client import redact

    answer = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded",
                        "details": [{"metadata": {"quota_limit": "IngestionMutateRequestsPerDayPerProject"}}]}}
    assert redact(answer, ["ab" * 32]) == answer
    assert redact("upstream timed out", []) == "upstream timed out"
