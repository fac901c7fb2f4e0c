"""The Google Ads report request (feedback's audience sizes) checked against Google's own client.

The reference is `google-ads`, Google's client library for the Google Ads API: its message types
are the API's (GoogleAdsService.Search; the REST body is their JSON mapping), its resources name
the fields a GAQL query may select, and the versions it ships are the ones Google still serves.
"""
from __future__ import annotations

import importlib

import pytest
from google.protobuf import json_format

from audience_relay.connectors.destinations.google.client import GOOGLE_ADS_API_VERSION, REPORT_QUERY, GoogleDataManager

ADS = f"google.ads.googleads.{GOOGLE_ADS_API_VERSION}"


def ads(module: str):
    """A module of the client's package for the version we call."""
    return importlib.import_module(f"{ADS}.{module}")


def profile() -> GoogleDataManager:
    return GoogleDataManager()


@pytest.mark.parametrize("page_token", [None, "CAES-next"])
def test_the_report_body_is_a_search_request_in_googles_json_mapping(page_token):
    search = ads("services.types.google_ads_service")
    request = profile().report_request("1234567890", page_token)
    message = json_format.ParseDict(request.json, search.SearchGoogleAdsRequest.pb(search.SearchGoogleAdsRequest()))  # unknown fields raise
    assert message.query == REPORT_QUERY
    assert message.page_token == (page_token or "")
    assert (request.method, request.path) == ("POST", "/customers/1234567890/googleAds:search")


def test_the_version_we_call_is_one_googles_current_client_serves():
    """The client library drops versions Google has sunset; calling one fails every report."""
    importlib.import_module(ADS)


def test_the_query_selects_fields_the_user_list_resource_has():
    selected = REPORT_QUERY.split("SELECT ", 1)[1].split(" FROM ", 1)[0].split(", ")
    assert all(field.startswith("user_list.") for field in selected)
    user_list = ads("resources.types.user_list").UserList
    assert {field.removeprefix("user_list.") for field in selected} <= set(user_list.meta.fields)
    assert REPORT_QUERY.endswith("WHERE user_list.type = CRM_BASED")
    assert ads("enums.types.user_list_type").UserListTypeEnum.UserListType.CRM_BASED.name == "CRM_BASED"


def test_a_page_googles_client_would_receive_is_read_with_every_field():
    """int64 fields (ids, sizes) arrive as JSON strings in the REST mapping."""
    search, user_list = ads("services.types.google_ads_service"), ads("resources.types.user_list").UserList
    response = search.SearchGoogleAdsResponse(
        results=[
            {"user_list": user_list(id=5550001, size_for_search=12000, match_rate_percentage=63)},
            {"user_list": user_list(id=5550002, size_for_search=0)},
        ],
        next_page_token="CAES-next",
    )
    body = json_format.MessageToDict(search.SearchGoogleAdsResponse.pb(response))
    audiences, next_page = profile().read_report(body)
    assert [(a.audience, a.size, a.match_rate) for a in audiences] == [("5550001", 12000, 0.63), ("5550002", 0, None)]
    assert next_page == "CAES-next"
