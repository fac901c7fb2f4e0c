"""LinkedIn's request shape, answers and config, checked against Segment's LinkedIn Audiences
destination's own tests (action-destinations, linkedin-audiences/updateAudience tests: the
elements it sends for test2@test.com, the DMP segment it creates)."""
import hashlib

import pytest

from audience_relay.connectors.destination import Batch
from audience_relay.connectors.destinations.linkedin.client import LINKEDIN_VERSION, LinkedInDmpSegments
from audience_relay.connectors.http.client import HttpError, HttpRequest
from audience_relay.connectors.retry import FailureKind
from audience_relay.connectors.state.store import BatchRecord
from audience_relay.pipeline.config import ConfigError, parse_config


def batch(op: str, members: list[tuple[str, str]]) -> Batch:
    return Batch(BatchRecord("r1", "linkedin", "high_value", op, 0, "c" * 64, len(members)), members)


def test_users_are_elements_with_the_hash_segment_sends():
    email = hashlib.sha256(b"test2@test.com").hexdigest()
    assert email == "7599502b735425943fffc167b4c9cfb072d028c109ee07501c8711a4fe0e12e7"   # Segment's expected idValue
    request = LinkedInDmpSegments().build(batch("remove", [("email", email), ("maid", "aece52e7-03ee-455a-b3c4-e57283966239")]), "dmp_segment_id")
    assert (request.method, request.path, request.headers) == ("POST", "/rest/dmpSegments/dmp_segment_id/users", {"X-RestLi-Method": "BATCH_CREATE"})
    assert request.json == {"elements": [
        {"action": "REMOVE", "userIds": [{"idType": "SHA256_EMAIL", "idValue": email}]},
        {"action": "REMOVE", "userIds": [{"idType": "GOOGLE_AID", "idValue": "aece52e7-03ee-455a-b3c4-e57283966239"}]}]}


def test_every_request_is_versioned_rest_li_2_with_a_bearer_token():
    signed = LinkedInDmpSegments().authorize(HttpRequest("POST", "/x", {}, {"X-RestLi-Method": "BATCH_CREATE"}), "t")
    assert signed.headers == {"LinkedIn-Version": LINKEDIN_VERSION, "X-Restli-Protocol-Version": "2.0.0",
                              "X-RestLi-Method": "BATCH_CREATE", "Authorization": "Bearer t"}


@pytest.mark.parametrize("status, body, kind", [
    (429, {"message": "Resource level throttle limit reached", "status": 429}, FailureKind.RATE_LIMITED),
    (503, {"message": "unavailable", "status": 503}, FailureKind.RETRYABLE),
    (400, {"message": "bad idValue", "serviceErrorCode": 100, "status": 400}, FailureKind.PERMANENT),
    (200, {"elements": [{"status": 201}, {"status": 429}]}, FailureKind.RATE_LIMITED),
    (200, {"elements": [{"status": 201}, {"status": 400}]}, FailureKind.PERMANENT),
])
def test_a_batch_fails_as_its_worst_element_or_its_status(status, body, kind):
    profile = LinkedInDmpSegments()
    assert profile.classify(HttpError(status, body, {})).kind == kind
    assert profile.refused(body) == (status == 200)
    assert not profile.refused({"elements": [{"status": 201}, {"status": 200}]})


def test_a_segment_is_created_as_segment_creates_it_and_found_page_by_page():
    profile = LinkedInDmpSegments(source_platform="SEGMENT")
    create = profile.create_request("456", "personas_test_audience")
    assert (create.method, create.path) == ("POST", "/rest/dmpSegments")
    assert create.json == {"name": "personas_test_audience", "sourcePlatform": "SEGMENT", "sourceSegmentId": "personas_test_audience",
                           "account": "urn:li:sponsoredAccount:456", "type": "USER", "destinations": [{"destination": "LINKEDIN"}]}
    assert profile.created_id({}, {"X-RestLi-Id": "123"}) == "123"
    assert profile.report_request("456", None).path == "/rest/dmpSegments?q=account&account=urn%3Ali%3AsponsoredAccount%3A456&start=0&count=100"
    page = {"elements": [{"id": 7, "name": "high_value", "destinations": [{"destination": "LINKEDIN", "audienceSize": 300, "status": "READY"}]}],
            "paging": {"start": 0, "count": 1, "total": 2}}
    assert [(a.name, a.audience) for a in profile.read_report(page)[0]] == [("high_value", "7")] and profile.read_report(page)[1] == "1"
    reported, following = profile.read_report({**page, "paging": {"start": 1, "count": 1, "total": 2}})
    assert [(a.audience, a.size, a.status) for a in reported] == [("7", 300, "READY")] and following is None


def _config(**connection) -> dict:
    return {"version": 1, "destinations": [{"id": "linkedin", "kind": "http_api", "profile": "linkedin_dmp_segments",
                                            "credentials": {"env": "LINKEDIN_OAUTH"}, "audiences": {"high_value": ["seg_1"]},
                                            "connection": {"base_url": "https://api.linkedin.com", **connection}}]}


def test_a_linkedin_destination_names_what_its_segments_need():
    destination = parse_config(_config(account_id="456", source_platform="ACME_CDP"), "d.yaml").destinations[0]
    assert destination.accepted_id_types == ("email", "maid")
    parse_config(_config(account_id="456", audience_ids={"high_value": "7"}), "d.yaml")   # nothing to create
    with pytest.raises(ConfigError, match=r"connection\.source_platform: required to create the segments of audiences \['high_value'\]"):
        parse_config(_config(account_id="456"), "d.yaml")
    with pytest.raises(ConfigError, match=r"connection\.account_id: the LinkedIn sponsored account id \(digits\) is required"):
        parse_config(_config(account_id="act-456", source_platform="ACME_CDP"), "d.yaml")
    raw = _config(account_id="456", source_platform="ACME_CDP")
    raw["destinations"][0]["id_types"] = ["phone"]
    with pytest.raises(ConfigError, match=r"id_types: linkedin_dmp_segments does not accept 'phone'"):
        parse_config(raw, "d.yaml")
