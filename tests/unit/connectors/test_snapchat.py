"""Snapchat's request shape, identifiers, answers and config, checked against Segment's Snapchat
Audiences destination's own tests (action-destinations, snap-audiences/syncAudience tests): the
hashes it expects for raw emails, phones and mobile ad ids, and the request it sends per schema."""
import hashlib

import pytest
from pyspark.sql import functions as F

from audience_relay.connectors.destination import Batch
from audience_relay.connectors.destinations.snapchat.client import SnapchatAudienceMatch
from audience_relay.connectors.http.client import HttpError, HttpRequest
from audience_relay.connectors.retry import FailureKind
from audience_relay.connectors.state.store import BatchRecord
from audience_relay.pipeline.config import ConfigError, parse_config
from audience_relay.transforms.identifiers import normalize_identifiers, with_match_key
from audience_relay.transforms.schemas import MEMBERSHIP

SEGMENT_VECTORS = [   # raw value as Segment's test gives it -> the hash its test expects Snapchat to get
    ("email", "Person@email.com ", "b375b7bbddb3de3298fbc7641063d9f03a38e118aa4480c8ab9f58740982e8bd"),
    ("phone", "+1(706)-767-5127", "2fd199db6d3fa9fe754886ff1822f2867fcb104a6639495eca25c2978efe4ed4"),
    ("maid", "F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6", "30a5154b77ab8b2ddbe19f5e7af72f33cc2a4a41f22940d965102650a1c72863"),
]
ACCOUNT = "8adc3db7-8148-4fbf-999c-8d2266369d74"


def batch(op: str, members: list[tuple[str, str]]) -> Batch:
    return Batch(BatchRecord("r1", "snap", "high_value", op, 0, "c" * 64, len(members)), members)


def test_raw_ids_reach_snapchat_as_segments_test_expects_them(spark):
    destination = parse_config(_config(account_id=ACCOUNT), "d.yaml").destinations[0]
    rows = [(f"u{i}", id_type, raw, "seg_1", None) for i, (id_type, raw, _) in enumerate(SEGMENT_VECTORS)]
    frame = (spark.createDataFrame(rows, MEMBERSHIP).withColumn("source_file", F.lit("f")).withColumn("read_error", F.lit(None).cast("string"))
             .transform(normalize_identifiers, "1"))
    rules = {id_type: destination.identifier_rule(id_type) for id_type, _, _ in SEGMENT_VECTORS}
    keyed = frame.select("id_type", "id_normalized", *[
        F.coalesce(*[F.when(F.col("id_type") == t, F.lit(getattr(rules[t], flag))) for t in rules]).alias(flag)
        for flag in ("hash_sha256", "phone_with_plus", "gmail_canonical")]).transform(with_match_key)
    assert {row["id_type"]: row["match_key"] for row in keyed.collect()} == {t: expected for t, _, expected in SEGMENT_VECTORS}


def test_an_add_of_one_id_type_is_the_request_segment_sends_and_mixed_types_are_one_entry_each():
    emails = [hashlib.sha256(b"test11111111@gmail.com").hexdigest(), "4ea60569f5d7920a08c4568b03a70129c9cfab26a48f44978e4626545084c2ab"]
    request = SnapchatAudienceMatch().build(batch("add", [("email", e) for e in emails]), "123456789")
    assert (request.method, request.path) == ("POST", "/v1/segments/123456789/users")
    assert request.json == {"users": [{"schema": ["EMAIL_SHA256"], "data": [
        ["28a12fd153fd0b60d1d8d696d8ea07ea387988bf0c906d7aeefecf17add3af48"],
        ["4ea60569f5d7920a08c4568b03a70129c9cfab26a48f44978e4626545084c2ab"]]}]}   # Segment's expected body
    mixed = SnapchatAudienceMatch().build(batch("remove", [("maid", "m" * 64), ("email", "e" * 64), ("phone", "p" * 64)]), "9")
    assert mixed.method == "DELETE" and [entry["schema"] for entry in mixed.json["users"]] == [["EMAIL_SHA256"], ["PHONE_SHA256"], ["MOBILE_AD_ID_SHA256"]]


def test_the_token_is_a_bearer_token():
    assert SnapchatAudienceMatch().authorize(HttpRequest("GET", "/x", None, {}), "t").headers == {"Authorization": "Bearer t"}


@pytest.mark.parametrize("status, body, kind", [
    (429, {"request_status": "ERROR", "debug_message": "Too many requests"}, FailureKind.RATE_LIMITED),
    (503, {"request_status": "ERROR", "debug_message": "unavailable"}, FailureKind.RETRYABLE),
    (400, {"request_status": "ERROR", "debug_message": "bad schema", "error_code": "E2002"}, FailureKind.PERMANENT),
    (403, {"request_status": "ERROR", "debug_message": "Caller does not have permission", "error_code": "E3002"}, FailureKind.PERMANENT),
])
def test_snapchat_errors_are_classified_by_status(status, body, kind):
    assert SnapchatAudienceMatch().classify(HttpError(status, body, {})).kind == kind


def test_a_200_with_a_failed_sub_request_is_refused():
    profile = SnapchatAudienceMatch()
    assert not profile.refused({"request_status": "SUCCESS", "users": [{"sub_request_status": "SUCCESS"}]})
    assert profile.refused({"request_status": "SUCCESS", "users": [{"sub_request_status": "SUCCESS"}, {"sub_request_status": "ERROR"}]})
    assert profile.refused({"request_status": "ERROR"})


def test_segments_are_created_named_and_listed_page_by_page():
    profile = SnapchatAudienceMatch()
    create = profile.create_request(ACCOUNT, "high_value")
    assert (create.method, create.path) == ("POST", f"/v1/adaccounts/{ACCOUNT}/segments")
    assert create.json == {"segments": [{"name": "high_value", "description": "audience-relay", "source_type": "FIRST_PARTY",
                                         "retention_in_days": 9999, "ad_account_id": ACCOUNT}]}
    assert profile.created_id({"segments": [{"segment": {"id": "5677923948298240"}}]}, {}) == "5677923948298240"
    page = {"segments": [{"segment": {"id": "1", "name": "high_value", "approximate_number_users": 1200}}],
            "paging": {"next_link": f"https://adsapi.snapchat.com/v1/adaccounts/{ACCOUNT}/segments?cursor=abc&limit=1000"}}
    reported, following = profile.read_report(page)
    assert [(a.name, a.audience, a.size) for a in reported] == [("high_value", "1", 1200)] and following == "abc"
    assert profile.report_request(ACCOUNT, "abc").path == f"/v1/adaccounts/{ACCOUNT}/segments?limit=1000&cursor=abc"
    assert profile.read_report({"segments": [], "paging": {}}) == ([], None)


def _config(**connection) -> dict:
    return {"version": 1, "destinations": [{"id": "snap", "kind": "http_api", "profile": "snapchat_audience_match",
                                            "credentials": {"env": "SNAP_OAUTH"}, "audiences": {"high_value": ["seg_1"]},
                                            "connection": {"base_url": "https://adsapi.snapchat.com", **connection}}]}


def test_a_snapchat_destination_needs_its_ad_account_and_takes_every_id_type_hashed():
    destination = parse_config(_config(account_id=ACCOUNT), "d.yaml").destinations[0]
    assert destination.accepted_id_types == ("email", "phone", "maid")
    with pytest.raises(ConfigError, match=r"connection\.account_id: the Snapchat ad account id \(a lower-case UUID\) is required"):
        parse_config(_config(account_id="act_1"), "d.yaml")
