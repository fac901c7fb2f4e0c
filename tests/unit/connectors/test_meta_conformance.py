"""Meta requests checked against Meta's official Python Business SDK (`facebook_business`), offline.

For the same members and session, `CustomAudience.add_users` / `remove_users` (multi-key schema,
`is_raw=True`, `pre_hashed=True`: our keys are hashed already, MADIDs in clear as Meta's docs
say) are run with the SDK's HTTP transport intercepted, and our connector's request with ours.
Method, URL path and every parameter must be equal, value for value (the SDK JSON-encodes
`payload` and `session` with sorted keys and compact separators; so do we).

Deliberate differences, where the parameters travel:
- the SDK puts every parameter of a DELETE in the query string; 10,000 rows of hashes are a
  URL of more than 600 KB, which Graph refuses above a few hundred rows (the SDK's own issues:
  facebook-python-business-sdk #279 "Delete users from Custom Audience error", #367, #717,
  facebook-java-business-sdk #179 "For DELETE, URL params are used instead of body"). We send
  them form-encoded in the body, as for POST;
- the SDK puts `access_token` and `appsecret_proof` in the query string of every request; a URL
  is quoted by connection errors, which end up in ledgers and dead letters, so we send them in
  the form body with the rest (a report page, a GET, takes the token as a bearer header);
- the SDK's report cursor asks for `summary=true` (a total count); feedback does not use it.
"""
from __future__ import annotations

import copy
import hashlib
import hmac
import json
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import yaml
from facebook_business.adobjects.adaccount import AdAccount
from facebook_business.adobjects.customaudience import CustomAudience
from facebook_business.api import FacebookAdsApi
from facebook_business.apiconfig import ads_api_config

from audience_relay.connectors.destination import Batch
from audience_relay.connectors.destinations.meta.client import REPORT_FIELDS, REPORT_PAGE_SIZE, MetaCustomAudiences
from audience_relay.connectors.state.store import BatchRecord
from audience_relay.pipeline.config import DEFAULT_CONFIG, parse_config
from audience_relay.pipeline.destinations import build_destination
from tests.unit.connectors.recording import Recording

EXAMPLE = yaml.safe_load(DEFAULT_CONFIG.read_text())
(META_EXAMPLE,) = [d for d in EXAMPLE["destinations"] if d["profile"] == "meta_custom_audiences"]
GRAPH_VERSION = urlsplit(META_EXAMPLE["connection"]["base_url"]).path.strip("/")
TOKEN, APP_SECRET = "EAAB-test-token", "app-secret-0123"
MEMBERS = sorted([("email", hashlib.sha256(b"ada@example.com").hexdigest()), ("phone", hashlib.sha256(b"14155550132").hexdigest()),
                  ("maid", "6d92078a-8246-4ba4-ae5b-76104861e7dc"), ("email", hashlib.sha256(b"bob@example.com").hexdigest())])


ANSWER = {"audience_id": "1", "session_id": "1", "num_received": len(MEMBERS), "num_invalid_entries": 0, "invalid_entry_samples": {}}


def _parameters(request: requests.PreparedRequest) -> dict[str, str]:
    """Every parameter, wherever it travels: the query string and a form-encoded body."""
    body = request.body.decode() if isinstance(request.body, bytes) else (request.body or "")
    return dict(parse_qsl(urlsplit(request.url).query)) | dict(parse_qsl(body))


def _ours(op: str, app_secret: str | None, monkeypatch) -> requests.PreparedRequest:
    raw = copy.deepcopy(EXAMPLE)
    (meta,) = [d for d in raw["destinations"] if d["profile"] == "meta_custom_audiences"]
    meta["credentials"] = {"env": "META_TOKEN"}
    monkeypatch.setenv("META_TOKEN", TOKEN)
    if app_secret:
        meta["connection"]["app_secret"] = {"env": "META_APP_SECRET"}
        monkeypatch.setenv("META_APP_SECRET", app_secret)
    config = next(d for d in parse_config(raw, "destinations.yaml").destinations if d.profile == "meta_custom_audiences")
    audience = sorted(config.audiences)[0]
    destination, recording = build_destination(config), Recording(ANSWER)
    destination.open()
    destination._session.mount("https://", recording)
    destination.send(Batch(BatchRecord("r1", config.id, audience, op, 0, "c" * 64, len(MEMBERS)), MEMBERS))
    (sent,) = recording.sent
    return sent


def _sdks(op: str, audience_id: str, payload: dict, session: dict, app_secret: str | None) -> requests.PreparedRequest:
    api = FacebookAdsApi.init(app_id="1", app_secret=app_secret, access_token=TOKEN, api_version=GRAPH_VERSION, crash_log=False)
    recording = Recording(ANSWER)
    api._session.requests.mount("https://", recording)
    audience = CustomAudience(audience_id, api=api)
    rows = payload["data"]
    (audience.add_users if op == "add" else audience.remove_users)(payload["schema"], rows, is_raw=True, pre_hashed=True, session=session)
    (sent,) = recording.sent
    return sent


@pytest.mark.parametrize("op", ["add", "remove"])
@pytest.mark.parametrize("app_secret", [None, APP_SECRET])
def test_our_request_carries_the_sdks_parameters_value_for_value(op, app_secret, monkeypatch):
    ours = _ours(op, app_secret, monkeypatch)
    parameters = _parameters(ours)
    audience_id = urlsplit(ours.url).path.split("/")[-2]
    sdk = _sdks(op, audience_id, json.loads(parameters["payload"]), json.loads(parameters["session"]), app_secret)
    assert ours.method == sdk.method == ("POST" if op == "add" else "DELETE")
    assert urlsplit(ours.url)[:3] == urlsplit(sdk.url)[:3]
    assert parameters == _parameters(sdk)
    assert json.loads(parameters["payload"])["is_raw"] is True
    if app_secret:   # HMAC-SHA256 of the token keyed by the app secret, as Graph checks it
        assert parameters["appsecret_proof"] == hmac.new(APP_SECRET.encode(), TOKEN.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("op", ["add", "remove"])
def test_nothing_travels_in_our_url_and_the_body_is_a_form(op, monkeypatch):
    """The deliberate differences above: no parameter in the URL, DELETE's in the body too."""
    ours = _ours(op, APP_SECRET, monkeypatch)
    assert urlsplit(ours.url).query == ""
    assert ours.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert TOKEN not in ours.url and "Authorization" not in ours.headers


def test_the_example_calls_the_graph_version_the_sdk_is_written_for():
    assert GRAPH_VERSION == ads_api_config["API_VERSION"]


REPORT_PAGES = [
    {"data": [{"id": "2380001", "approximate_count_lower_bound": 1200, "approximate_count_upper_bound": 1500,
               "operation_status": {"code": 200, "description": "Normal"}}],
     "paging": {"cursors": {"before": "QVFIUb", "after": "QVFIUa"},
                "next": f"https://graph.facebook.com/{GRAPH_VERSION}/act_1234/customaudiences?limit=100&after=QVFIUa"}},
    {"data": [{"id": "2380002"}], "paging": {"cursors": {"before": "QVFIUc", "after": "QVFIUd"}}},
]


def test_report_pages_ask_what_the_sdks_cursor_asks_and_read_what_it_reads():
    """`AdAccount.get_custom_audiences` pages with `after` while `paging.next` is there; so do we."""
    api = FacebookAdsApi.init(app_id="1", app_secret=APP_SECRET, access_token=TOKEN, api_version=GRAPH_VERSION, crash_log=False)
    recording = Recording(*REPORT_PAGES)
    api._session.requests.mount("https://", recording)
    cursor = AdAccount("act_1234", api=api).get_custom_audiences(fields=REPORT_FIELDS.split(","), params={"limit": REPORT_PAGE_SIZE})
    sdk_audiences = [(audience["id"], audience.get("approximate_count_lower_bound", 0)) for audience in cursor]

    profile = MetaCustomAudiences(app_secret=APP_SECRET)
    ours, audiences, page_token = [], [], None
    for page in REPORT_PAGES:
        ours.append(profile.authorize(profile.report_request("1234", page_token), TOKEN))
        read, page_token = profile.read_report(page)
        audiences += [(audience.audience, audience.size) for audience in read]
    assert page_token is None and audiences == sdk_audiences
    assert len(recording.sent) == len(ours)
    for sdk, mine in zip(recording.sent, ours):
        assert (mine.method, f"/{GRAPH_VERSION}{urlsplit(mine.path).path}") == (sdk.method, urlsplit(sdk.url).path)
        # Both send the proof as a parameter; the token travels as a bearer header with us (not in the
        # URL); the SDK's cursor also asks for `summary` (a total count), which feedback does not use.
        sdk_parameters = {k: v for k, v in parse_qsl(urlsplit(sdk.url).query) if k not in ("access_token", "summary")}
        assert dict(parse_qsl(urlsplit(mine.path).query)) == sdk_parameters
        assert mine.headers["Authorization"] == f"Bearer {TOKEN}"
