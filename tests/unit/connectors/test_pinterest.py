"""Pinterest requests checked against Pinterest's Python SDK (pinterest-api-sdk's generated
client, built from Pinterest's OpenAPI description), offline: the SDK's customer list update and
audience list calls are run with its HTTP transport intercepted, and our connector's requests
must have the same method, URL and body. Also the config's rules and the answers."""

import pytest
from openapi_generated.pinterest_client import rest
from openapi_generated.pinterest_client.api.audiences_api import AudiencesApi
from openapi_generated.pinterest_client.api.customer_lists_api import CustomerListsApi
from openapi_generated.pinterest_client.api_client import ApiClient
from openapi_generated.pinterest_client.configuration import Configuration
from openapi_generated.pinterest_client.model.customer_list_update_request import CustomerListUpdateRequest
from openapi_generated.pinterest_client.model.user_list_operation_type import UserListOperationType

from audience_relay.connectors.destination import Batch
from audience_relay.connectors.destinations.pinterest.client import PinterestCustomerLists
from audience_relay.connectors.http.client import HttpError
from audience_relay.connectors.retry import FailureKind
from audience_relay.connectors.state.store import BatchRecord
from audience_relay.pipeline.config import ConfigError, parse_config

API_ROOT = "https://api.pinterest.com"
HASHES = ["a" * 64, "b" * 64, "c" * 64]


class Intercepted(Exception):
    pass


@pytest.fixture
def sent(monkeypatch):
    """What the SDK would send: (method, url, JSON body)."""
    calls = []

    def request(self, method, url, query_params=None, headers=None, body=None, post_params=None, **_):
        calls.append((method, url + (f"?{'&'.join(f'{k}={v}' for k, v in query_params)}" if query_params else ""), body))
        raise Intercepted

    monkeypatch.setattr(rest.RESTClientObject, "request", request)
    return calls


def sdk() -> ApiClient:
    return ApiClient(Configuration(host=f"{API_ROOT}/v5", access_token="t"))


def batch(op: str) -> Batch:
    return Batch(BatchRecord("r1", "pinterest", "high_value", op, 0, "c" * 64, 3), [("email", h) for h in HASHES])


@pytest.mark.parametrize("op, operation", [("add", "ADD"), ("remove", "REMOVE")])
def test_a_batch_is_the_customer_list_update_the_sdk_sends(sent, op, operation):
    with pytest.raises(Intercepted):
        CustomerListsApi(sdk()).customer_lists_update("549755885175", "1001", CustomerListUpdateRequest(
            records=",".join(HASHES), operation_type=operation))
    assert operation in UserListOperationType.allowed_values[("value",)]
    ours = PinterestCustomerLists(ad_account_id="549755885175").build(batch(op), "1001")
    assert sent == [(ours.method, f"{API_ROOT}{ours.path}", ours.json)]


def test_the_audience_report_is_the_audience_list_the_sdk_asks_for(sent):
    with pytest.raises(Intercepted):
        AudiencesApi(sdk()).audiences_list("549755885175", page_size=250, bookmark="b2")
    ours = PinterestCustomerLists().report_request("549755885175", "b2")
    (method, url, _), = sent
    assert (method, url) == (ours.method, f"{API_ROOT}{ours.path}")


def test_audiences_are_reported_by_their_customer_list_and_paged_by_bookmark():
    page = {"items": [{"id": "2542620905473", "size": 1200, "status": "READY", "rule": {"customer_list_id": "1001"}},
                      {"id": "2542620905474", "size": 0, "status": "READY", "rule": {"engagement_type": "click"}}], "bookmark": "b3"}
    reported, following = PinterestCustomerLists().read_report(page)
    assert [(a.audience, a.size, a.status) for a in reported] == [("1001", 1200, "READY")] and following == "b3"


@pytest.mark.parametrize("status, kind", [(429, FailureKind.RATE_LIMITED), (503, FailureKind.RETRYABLE), (400, FailureKind.PERMANENT)])
def test_pinterest_errors_are_classified_by_status(status, kind):
    assert PinterestCustomerLists().classify(HttpError(status, {"code": 8, "message": "m"}, {})).kind == kind


def _config(**destination) -> dict:
    entry = {"id": "pinterest", "kind": "http_api", "profile": "pinterest_customer_lists", "credentials": {"env": "PINTEREST_OAUTH"},
             "audiences": {"high_value": ["seg_1"]}, "id_types": ["email"],
             "connection": {"base_url": API_ROOT, "account_id": "549755885175", "audience_ids": {"high_value": "1001"}}}
    return {"version": 1, "destinations": [{**entry, **destination}]}


def test_a_pinterest_destination_names_one_id_type_and_each_lists_id():
    assert parse_config(_config(), "d.yaml").destinations[0].accepted_id_types == ("email",)
    without_type = _config()
    del without_type["destinations"][0]["id_types"]
    with pytest.raises(ConfigError, match=r"id_types: a Pinterest customer list holds one type of id \(EMAIL or MAID\): give one, not \['email', 'maid'\]"):
        parse_config(without_type, "d.yaml")
    with pytest.raises(ConfigError, match=r"connection\.audience_ids: audiences \['high_value'\] have no Pinterest customer list id"):
        parse_config(_config(connection={"base_url": API_ROOT, "account_id": "549755885175"}), "d.yaml")
    with pytest.raises(ConfigError, match=r"id_types: pinterest_customer_lists does not accept 'phone'"):
        parse_config(_config(id_types=["phone"]), "d.yaml")
