"""The destination registry: every folder under connectors/destinations/ is one line of it, and
the config, deliver and feedback find a destination only through it."""
from pathlib import Path

import pytest

from audience_relay.connectors.destinations import registry
from audience_relay.connectors.destinations.shape import DestinationType, UnsupportedDestination
from audience_relay.pipeline.config import parse_config
from audience_relay.pipeline.destinations import SUPPORTED_KINDS, build_destination

FOLDERS = Path(registry.__file__).parent


def test_every_destination_folder_is_registered_once_under_its_profiles_name():
    folders = sorted(p.name for p in FOLDERS.iterdir() if (p / "__init__.py").exists())
    registered = sorted(d.connect.__module__.rsplit(".", 1)[-1] for d in registry.REGISTRY.values())
    assert folders == registered == ["google", "linkedin", "meta", "pinterest", "s3", "sftp", "snapchat", "tiktok", "x"]
    for name, destination in registry.REGISTRY.items():
        assert isinstance(destination, DestinationType) and destination.profile.name == name
        folder = FOLDERS / destination.connect.__module__.rsplit(".", 1)[-1]
        assert all((folder / module).exists() for module in ("profile.py", "config.py", "client.py"))
        assert destination.connection.__module__ == f"{destination.connect.__module__}.config"
    assert registry.PROFILES == {name: d.profile for name, d in registry.REGISTRY.items()}
    assert SUPPORTED_KINDS == ("http_api", "s3", "sftp")


def _config(profile: str, kind: str) -> dict:
    return {"version": 1, "destinations": [{"id": "d", "kind": kind, "profile": profile, "credentials": {"env": "TOKEN"},
                                            "audiences": {"a": ["s1"]}}]}


def test_the_config_knows_exactly_the_registered_profiles():
    known = r"\['google_data_manager', 'linkedin_dmp_segments', 'meta_custom_audiences', 'pinterest_customer_lists', 's3_objects', 'sftp_gzip_csv', 'snapchat_audience_match', 'tiktok_audiences', 'x_custom_audiences'\]"
    with pytest.raises(ValueError, match=rf"unknown profile 'orkut_circles'; known: {known}"):
        parse_config(_config("orkut_circles", "http_api"), "destinations.yaml")


def test_a_destination_whose_profile_is_not_registered_gets_no_connector(monkeypatch):
    destination = parse_config(_config("s3_objects", "s3"), "destinations.yaml").destinations[0]
    monkeypatch.delitem(registry.REGISTRY, "s3_objects")
    with pytest.raises(UnsupportedDestination, match=r"destination d: no connector for kind 's3'"):
        build_destination(destination)
