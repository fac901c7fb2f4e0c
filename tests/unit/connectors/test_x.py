"""X's request shape, signature, answers and config. The body is the one "Audiences API Reference"
(Custom Audiences Users) shows: an array of operations, `users` of one identifier list each; the
OAuth 1.0a signature is checked by oauthlib's own verifier in the emulator."""
import json
import time

import pytest

from audience_relay.connectors.destination import Batch
from audience_relay.connectors.destinations.x.client import XCustomAudiences
from audience_relay.connectors.http.client import HttpApiDestination, HttpError, HttpRequest
from audience_relay.connectors.retry import FailureKind
from audience_relay.connectors.secrets import SecretUnavailable
from audience_relay.connectors.state.store import BatchRecord
from audience_relay.pipeline.config import ConfigError, parse_config
from audience_relay.testing.emulators.http_destination import EmulatorConfig, HttpDestinationEmulator

KEYS = {"consumer_key": "ck", "consumer_secret": "cs", "access_token": "at", "access_token_secret": "ats"}


def batch(op: str, members: list[tuple[str, str]]) -> Batch:
    return Batch(BatchRecord("r1", "x", "high_value", op, 0, "c" * 64, len(members)), members)


def test_a_batch_is_one_operation_of_users_with_one_identifier_list_each():
    request = XCustomAudiences(account_id="18ce54d4x5t").build(batch("remove", [("email", "e" * 64), ("external_id", "crm-1")]), "1nmth")
    assert (request.method, request.path) == ("POST", "/12/accounts/18ce54d4x5t/custom_audiences/1nmth/users")
    assert request.json == [{"operation_type": "Delete", "params": {"users": [{"email": ["e" * 64]}, {"partner_user_id": ["crm-1"]}]}}]


def test_requests_carry_an_oauth1_hmac_sha1_header_and_a_bad_secret_is_named():
    signed = XCustomAudiences(base_url="https://ads-api.x.com").authorize(HttpRequest("POST", "/12/x", [], {}), json.dumps(KEYS))
    header = signed.headers["Authorization"]
    assert header.startswith("OAuth ") and 'oauth_signature_method="HMAC-SHA1"' in header and 'oauth_consumer_key="ck"' in header
    with pytest.raises(SecretUnavailable, match="consumer_key, consumer_secret, access_token, access_token_secret"):
        XCustomAudiences().authorize(HttpRequest("POST", "/12/x", [], {}), "a-bearer-token")


def test_the_emulator_refuses_a_request_signed_with_other_keys():
    keys = ("ck", "cs", "at", "ats")
    with HttpDestinationEmulator(EmulatorConfig(oauth1_keys=keys)) as emulator:
        for secret, accepted in ((KEYS, True), ({**KEYS, "consumer_secret": "stolen"}, False)):
            connector = HttpApiDestination(emulator.url, XCustomAudiences(base_url=emulator.url, account_id="a1"), token=json.dumps(secret))
            connector.open()
            try:
                connector.send(batch("add", [("email", "e" * 64)]))
                sent = True
            except HttpError as error:
                sent = False
                assert error.status == 401 and connector.classify(error).kind == FailureKind.PERMANENT
            connector.close()
            assert sent == accepted


def test_a_429_waits_until_x_says_the_window_resets_and_short_counts_are_sent_again():
    profile = XCustomAudiences()
    reset = str(int(time.time()) + 30)
    failure = profile.classify(HttpError(429, {"errors": [{"code": "TOO_MANY_REQUESTS", "message": "Rate limit exceeded"}]}, {"x-rate-limit-reset": reset}))
    assert failure.kind == FailureKind.RATE_LIMITED and 25 <= failure.retry_after <= 31
    assert profile.classify(HttpError(503, {"errors": [{"code": "OVER_CAPACITY"}]}, {})).kind == FailureKind.RETRYABLE
    assert profile.classify(HttpError(400, {"errors": [{"code": "INVALID_PARAMETER"}]}, {})).kind == FailureKind.PERMANENT
    short = {"data": {"success_count": 9, "total_count": 10}}
    assert profile.refused(short) and profile.classify(HttpError(200, short, {})).kind == FailureKind.RETRYABLE
    assert not profile.refused({"data": {"success_count": 10, "total_count": 10}, "operation_errors": [[]]})


def test_audiences_are_created_by_name_and_listed_by_cursor():
    profile = XCustomAudiences()
    create = profile.create_request("a1", "high value")
    assert (create.method, create.path, create.json) == ("POST", "/12/accounts/a1/custom_audiences?name=high+value", None)
    assert profile.created_id({"data": {"id": "1nmth"}}, {}) == "1nmth"
    page = {"data": [{"id": "1nmth", "name": "high value", "audience_size": None, "targetable": False, "reasons_not_targetable": ["PROCESSING"]}],
            "next_cursor": "c2"}
    assert [(a.name, a.audience) for a in profile.read_report(page)[0]] == [("high value", "1nmth")] and profile.read_report(page)[1] == "c2"
    reported, following = profile.read_report({**page, "next_cursor": None})
    assert [(a.size, a.status) for a in reported] == [(0, "PROCESSING")] and following is None


def test_an_x_destination_needs_its_ads_account():
    raw = {"version": 1, "destinations": [{"id": "x", "kind": "http_api", "profile": "x_custom_audiences", "credentials": {"env": "X_KEYS"},
                                           "audiences": {"high_value": ["seg_1"]},
                                           "connection": {"base_url": "https://ads-api.x.com", "account_id": "18ce54d4x5t"}}]}
    assert parse_config(raw, "d.yaml").destinations[0].accepted_id_types == ("email", "phone", "maid", "external_id")
    raw["destinations"][0]["connection"]["account_id"] = "ACT-1"
    with pytest.raises(ConfigError, match=r"connection\.account_id: the X ads account id"):
        parse_config(raw, "d.yaml")
