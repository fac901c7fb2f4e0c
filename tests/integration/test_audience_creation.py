"""Audiences the config gives no platform id for: found by name on the platform, else created
there, the id recorded in the state store so the next run asks nothing, for every platform whose
API creates audiences (against the emulator's dialect of it)."""
import pytest

from audience_relay.connectors.destinations.registry import REGISTRY
from audience_relay.connectors.state.sqlite import SqliteStateStore
from audience_relay.pipeline.config import parse_config
from audience_relay.pipeline.platform_audiences import with_platform_audience_ids
from audience_relay.testing.emulators.http_destination import HttpDestinationEmulator
from tests.integration.platforms import PLATFORMS, emulator_config, secret

pytestmark = pytest.mark.integration

CREATING = {   # profile -> a destination of it with one audience known by id and two to find or create
    profile: {"id": name, "kind": "http_api", "profile": profile, "credentials": {"env": "PLATFORM_TOKEN"},
              "connection": {**connection, "audience_ids": {"known": "5550001"}},
              "audiences": {"known": ["seg_1"], "high_value": ["seg_2"], "lapsed": ["seg_3"]}}
    for name, (profile, connection) in PLATFORMS.items() if REGISTRY[profile].creates_audiences
}


def test_every_platform_that_creates_audiences_is_here():
    assert set(CREATING) == {name for name, d in REGISTRY.items() if d.creates_audiences} == {
        "tiktok_audiences", "snapchat_audience_match", "linkedin_dmp_segments", "x_custom_audiences"}


@pytest.mark.parametrize("platform", CREATING)
def test_an_audience_is_found_by_name_over_every_page_and_created_only_when_absent(platform, monkeypatch):
    destination = parse_config({"version": 1, "destinations": [CREATING[platform]]}, "destinations.yaml").destinations[0]
    with HttpDestinationEmulator(emulator_config(platform, report_page_size=1)) as emulator:
        monkeypatch.setenv("PLATFORM_TOKEN", secret(platform, emulator.url))
        for name in ("first", "second", "high_value"):
            emulator.create_audience(name)
        connector = REGISTRY[platform].connect(destination, emulator.url)
        connector.open()
        assert connector.ensure_audience("700", "high_value") == ("9000003", False)   # on the third page
        created, was_created = connector.ensure_audience("700", "lapsed")
        assert was_created and emulator.audiences[created] == "lapsed" and emulator.score.audiences_created == 4
        assert connector.ensure_audience("700", "lapsed") == (created, False)
        connector.close()
    assert emulator.score.audiences_created == 4


@pytest.mark.parametrize("platform", CREATING)
def test_deliver_records_the_ids_so_the_next_run_asks_nothing_and_a_lost_record_finds_instead_of_creating(platform, tmp_path, monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")   # the emulator's token endpoint is plain http on loopback
    raw = CREATING[platform]
    destination = parse_config({"version": 1, "destinations": [raw]}, "destinations.yaml").destinations[0]
    store = SqliteStateStore(tmp_path / "state.db")
    with HttpDestinationEmulator(emulator_config(platform)) as emulator:
        monkeypatch.setenv("PLATFORM_TOKEN", secret(platform, emulator.url))
        first = with_platform_audience_ids(destination, store, emulator.url)
        ids = first.connection.audience_ids
        assert ids["known"] == "5550001" and {emulator.audiences[ids[a]] for a in ("high_value", "lapsed")} == {"high_value", "lapsed"}
        assert emulator.score.audiences_created == 2 and store.audience_ids(destination.id) == {a: ids[a] for a in ("high_value", "lapsed")}
        asked = len(emulator.score.request_times), emulator.score.report_pages
        second = with_platform_audience_ids(destination, store, emulator.url)
        assert second.connection.audience_ids == ids and (len(emulator.score.request_times), emulator.score.report_pages) == asked
        fresh = with_platform_audience_ids(destination, SqliteStateStore(tmp_path / "other.db"), emulator.url)
        assert fresh.connection.audience_ids == ids and emulator.score.audiences_created == 2
