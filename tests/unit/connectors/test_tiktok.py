"""TikTok's request shape, answers and config, checked against the request Segment's TikTok
Audiences destination sends in its own tests (action-destinations, tiktok-audiences/addUser
tests: the body for `testing@testing.com` added to audience 1234345 of advertiser 123)."""
import hashlib

import pytest

from audience_relay.connectors.destination import Batch
from audience_relay.connectors.destinations.tiktok.client import TikTokAudiences
from audience_relay.connectors.http.client import HttpError, HttpRequest
from audience_relay.connectors.retry import FailureKind
from audience_relay.connectors.state.store import BatchRecord
from audience_relay.pipeline.config import ConfigError, parse_config

SEGMENT_ADD_BODY = {   # as Segment's test expects it, byte for byte once JSON-encoded
    "advertiser_ids": ["123"], "action": "add", "id_schema": ["EMAIL_SHA256"],
    "batch_data": [[{"id": "584c4423c421df49955759498a71495aba49b8780eb9387dff333b6f0982c777", "audience_ids": ["1234345"]}]],
}


def batch(op: str, members: list[tuple[str, str]]) -> Batch:
    return Batch(BatchRecord("r1", "tiktok", "high_value", op, 0, "c" * 64, len(members)), members)


def test_an_add_is_the_mapping_request_segment_sends():
    email = hashlib.sha256(b"testing@testing.com").hexdigest()
    request = TikTokAudiences(advertiser_id="123").build(batch("add", [("email", email)]), "1234345")
    assert (request.method, request.path, request.json) == ("POST", "/open_api/v1.3/segment/mapping/", SEGMENT_ADD_BODY)


def test_a_remove_is_a_delete_action_with_one_row_per_member_and_a_slot_per_column():
    request = TikTokAudiences(advertiser_id="123").build(batch("remove", [("phone", "p" * 64), ("email", "e" * 64)]), "42")
    assert request.json["action"] == "delete" and request.json["id_schema"] == ["EMAIL_SHA256", "PHONE_SHA256"]
    assert request.json["batch_data"] == [[{}, {"id": "p" * 64, "audience_ids": ["42"]}], [{"id": "e" * 64, "audience_ids": ["42"]}, {}]]


def test_the_token_travels_in_the_access_token_header():
    signed = TikTokAudiences().authorize(HttpRequest("POST", "/x", {}, {}), "secret-token")
    assert signed.headers == {"Access-Token": "secret-token"}


@pytest.mark.parametrize("body, kind, wait", [
    ({"code": 40100, "message": "Too many requests: the app's per-second limit (QPS) is reached"}, FailureKind.RATE_LIMITED, 1.0),
    ({"code": 40133, "message": "Advertiser QPM limit exceeded"}, FailureKind.RATE_LIMITED, 60.0),
    ({"code": 40100, "message": "Too many requests: the app's daily limit (QPD) is reached"}, FailureKind.QUOTA_EXHAUSTED, None),
    ({"code": 40002, "message": "Invalid id"}, FailureKind.PERMANENT, None),
    ({"code": 40105, "message": "Access token is invalid"}, FailureKind.PERMANENT, None),
    ({"code": 50002, "message": "Internal service error"}, FailureKind.RETRYABLE, None),
    ({"code": 60001, "message": "System maintenance"}, FailureKind.RETRYABLE, None),
])
def test_tiktoks_codes_in_a_200_are_errors_classified_by_code(body, kind, wait):
    profile = TikTokAudiences()
    assert profile.refused(body) and not profile.refused({"code": 0, "message": "OK"})
    failure = profile.classify(HttpError(200, body, {}))
    assert failure.kind == kind and failure.retry_after == wait and str(body["code"]) in failure.message


def test_the_audience_list_is_read_page_by_page():
    profile = TikTokAudiences()
    first = profile.report_request("700", None)
    assert first.method == "GET" and first.path == "/open_api/v1.3/dmp/custom_audience/list/?advertiser_id=700&page=1&page_size=100"
    page = {"code": 0, "data": {"list": [{"audience_id": "9", "cover_num": 1200, "is_valid": True}],
                                "page_info": {"page": 1, "page_size": 100, "total_number": 101, "total_page": 2}}}
    audiences, following = profile.read_report(page)
    assert [(a.audience, a.size, a.match_rate) for a in audiences] == [("9", 1200, None)] and following == "2"
    assert profile.read_report({"code": 0, "data": {"list": [], "page_info": {"page": 2, "total_page": 2}}})[1] is None


def _config(**connection) -> dict:
    return {"version": 1, "destinations": [{"id": "tiktok", "kind": "http_api", "profile": "tiktok_audiences",
                                            "credentials": {"env": "TIKTOK_ACCESS_TOKEN"}, "audiences": {"high_value": ["seg_1"]},
                                            "connection": {"base_url": "https://business-api.tiktok.com", **connection}}]}


@pytest.mark.parametrize("connection, error", [
    ({"audience_ids": {"high_value": "1"}}, r"connection\.account_id: the TikTok advertiser id \(digits\) is required"),
    ({"account_id": "adv-1", "audience_ids": {"high_value": "1"}}, r"connection\.account_id: the TikTok advertiser id"),
    ({"account_id": "700", "audience_ids": {"high_value": "abc"}}, r"connection\.audience_ids\.high_value: 'abc' is not a TikTok audience id"),
    ({"account_id": "700", "audience_ids": {"high_value": "1"}, "app_secret": {"env": "X"}}, r"connection\.app_secret: unknown key"),
])
def test_a_tiktok_destination_names_the_key_its_requests_lack(connection, error):
    with pytest.raises(ConfigError, match=error):
        parse_config(_config(**connection), "destinations.yaml")


def test_an_audience_without_a_tiktok_id_is_left_for_deliver_to_find_or_create():
    destination = parse_config(_config(account_id="700"), "d.yaml").destinations[0]
    assert destination.connection.audience_ids == {}


def test_an_audience_is_created_as_segment_creates_it_and_found_by_name_page_by_page():
    profile = TikTokAudiences()
    created = profile.create_request("123", "personas_test_audience")
    assert (created.method, created.path) == ("POST", "/open_api/v1.3/segment/audience/")
    assert created.json == {"custom_audience_name": "personas_test_audience", "advertiser_id": "123", "action": "create"}   # Segment's test body
    assert profile.created_id({"data": {"audience_id": "1234345"}}, {}) == "1234345"   # Segment's test answer
    page = {"code": 0, "data": {"list": [{"audience_id": 9, "name": "high_value"}], "page_info": {"page": 1, "total_page": 3}}}
    reported, following = profile.read_report(page)
    assert [(a.name, a.audience) for a in reported] == [("high_value", "9")] and following == "2"


def test_a_tiktok_destination_takes_emails_and_phones_not_maids():
    raw = _config(account_id="700", audience_ids={"high_value": "1"})
    assert parse_config(raw, "d.yaml").destinations[0].accepted_id_types == ("email", "phone")
    raw["destinations"][0]["id_types"] = ["maid"]
    with pytest.raises(ConfigError, match=r"id_types: tiktok_audiences does not accept 'maid'"):
        parse_config(raw, "d.yaml")
