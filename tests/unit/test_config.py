import copy

import pytest
import yaml

from audience_relay.pipeline.config import DEFAULT_CONFIG, ConfigError, load_config, parse_config

EXAMPLE = yaml.safe_load(DEFAULT_CONFIG.read_text())


def broken(change):
    raw = copy.deepcopy(EXAMPLE)
    change(raw)
    with pytest.raises(ConfigError) as error:
        parse_config(raw, "destinations.yaml")
    return str(error.value)


def test_example_config_has_the_three_modelled_destinations():
    config = load_config(DEFAULT_CONFIG)
    meta, google, sftp = config.active_destinations
    assert (meta.profile, meta.batch_size, meta.identifier_rule("maid").hash_sha256) == ("meta_custom_audiences", 10_000, False)
    assert meta.identifier_rule("phone").phone_with_plus is False
    assert (google.batch_size, google.rate_limit.requests_per_minute, google.daily_quota.requests) == (10_000, 300, 100_000)
    assert google.identifier_rule("phone").phone_with_plus and google.identifier_rule("email").gmail_canonical
    assert (sftp.kind, sftp.sync_mode) == ("sftp", "upsert")


def test_unknown_key_is_named_with_its_destination():
    message = broken(lambda raw: raw["destinations"][1].update(colour="blue"))
    assert "destinations.yaml: destinations[1] (google_dm).colour: unknown key" in message


def test_batch_size_above_the_profile_maximum_is_refused():
    message = broken(lambda raw: raw["destinations"][0].update(max_batch_size=20_000))
    assert "destinations[0] (meta_ads)" in message and "max_batch_size: 20000 is above" in message


def test_inline_secret_is_refused():
    message = broken(lambda raw: raw["destinations"][0].update(credentials={"token": "EAAB..."}))
    assert "credentials.token: unknown key" in message


def test_credentials_need_exactly_one_reference():
    message = broken(lambda raw: raw["destinations"][0].update(credentials={}))
    assert "exactly one of `env` or `secret_arn`" in message


def test_segment_feeding_two_audiences_is_refused():
    def change(raw):
        raw["destinations"][0]["audiences"]["meta_sports_fans"].append("seg_0001")

    assert "segment 'seg_0001' feeds both" in broken(change)


def test_sending_a_hashed_id_type_in_clear_is_refused():
    message = broken(lambda raw: raw["destinations"][0].update(hashing={"email": "none"}))
    assert "hashing.email" in message


def test_rate_above_the_published_limit_is_refused():
    message = broken(lambda raw: raw["destinations"][1].update(rate_limit={"requests_per_minute": 301}))
    assert "rate_limit.requests_per_minute: 301" in message


def test_bad_value_names_the_nested_key():
    message = broken(lambda raw: raw["destinations"][2]["connection"].update(port="twenty-two"))
    assert "destinations[2] (partner_sftp).connection.port" in message


def test_audience_name_that_would_escape_a_path_is_refused():
    message = broken(lambda raw: raw["destinations"][0]["audiences"].update({"../etc": ["seg_0099"]}))
    assert "audiences" in message


def test_duplicate_destination_ids_are_refused():
    message = broken(lambda raw: raw["destinations"].append(copy.deepcopy(raw["destinations"][0])))
    assert "'meta_ads' appears twice" in message


def test_duplicate_yaml_keys_are_refused(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("version: 1\nversion: 1\ndestinations: []\n")
    with pytest.raises(ConfigError, match=r"d\.yaml: duplicate key 'version' at line 2"):
        load_config(path)


def test_unreadable_yaml_names_the_file(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("destinations: [\n")
    with pytest.raises(ConfigError, match=r"d\.yaml: not valid YAML"):
        load_config(path)


def test_row_count_band_can_be_turned_off():
    raw = copy.deepcopy(EXAMPLE)
    raw["quality"]["row_count_band"] = None
    assert parse_config(raw, "x").quality.row_count_band is None


def test_config_is_read_from_s3(moto_server):
    import boto3

    boto3.client("s3").create_bucket(Bucket="artifacts")
    boto3.client("s3").put_object(Bucket="artifacts", Key="config/destinations.yaml", Body=DEFAULT_CONFIG.read_bytes())
    assert [d.id for d in load_config("s3://artifacts/config/destinations.yaml").active_destinations] == ["meta_ads", "google_dm", "partner_sftp"]


def test_missing_config_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: no such config file"):
        load_config(tmp_path / "nope.yaml")


def test_a_shared_quota_key_must_have_one_limit():
    def change(raw):
        raw["destinations"][0]["daily_quota"] = {"requests": 500, "key": "google_ads_project"}

    assert "shared by 'meta_ads' (500 requests) and 'google_dm' (100000)" in broken(change)


def test_audience_ids_must_name_configured_audiences():
    message = broken(lambda raw: raw["destinations"][0]["connection"]["audience_ids"].update(nope="123"))
    assert "connection.audience_ids: ['nope'] are not audiences" in message


def test_prepare_engine_is_glue_or_emr_and_named_when_wrong():
    assert load_config(DEFAULT_CONFIG).destinations[0].orchestration.prepare_engine == "glue"
    message = broken(lambda raw: raw["destinations"][2].update(orchestration={"prepare_engine": "lambda"}))
    assert "(partner_sftp).orchestration.prepare_engine" in message


def test_a_config_restricted_to_some_destinations_keeps_only_those_and_refuses_unknown_ids():
    config = load_config(DEFAULT_CONFIG)
    assert [d.id for d in config.restricted_to(["google_dm"]).active_destinations] == ["google_dm"]
    with pytest.raises(ConfigError, match="nope"):
        config.restricted_to(["google_dm", "nope"])


def test_an_emr_destination_sizes_its_cluster_and_a_bad_size_is_named():
    from audience_relay.orchestration.machines.destination import destination_machine
    from audience_relay.orchestration.machines.specs import Resources, machine_specs

    raw = copy.deepcopy(EXAMPLE)
    raw["destinations"][2]["orchestration"] = {"prepare_engine": "emr", "emr": {
        "instance_type": "r6g.2xlarge", "core_instances": 5, "subnet_id": "subnet-0123456789abcdef0"}}
    (spec,) = [s for s in machine_specs(parse_config(raw, "destinations.yaml").destinations) if s.id == "partner_sftp"]
    cluster = destination_machine(spec, Resources())["States"]["CreateCluster"]["Arguments"]
    assert [(g["InstanceType"], g["InstanceCount"]) for g in cluster["Instances"]["InstanceGroups"]] == [("r6g.2xlarge", 1), ("r6g.2xlarge", 5)]
    assert cluster["ReleaseLabel"] == "emr-7.9.0" and cluster["AutoTerminationPolicy"] == {"IdleTimeout": 3600}
    assert cluster["Instances"]["Ec2SubnetId"] == "subnet-0123456789abcdef0"
    message = broken(lambda r: r["destinations"][2].update(orchestration={"prepare_engine": "emr", "emr": {"core_instances": 0}}))
    assert "core_instances" in message and "partner_sftp" in message


def window_ingest(raw, **ingest):
    raw["ingest"] = {"mode": "window", **ingest}
    raw["quality"] = {"row_count_band": None}
    for destination in raw["destinations"]:
        destination["sync_mode"] = "upsert"


def test_window_ingest_is_checked_key_by_key():
    raw = copy.deepcopy(EXAMPLE)
    window_ingest(raw, suffix=".parquet", window_files=500, window_seconds=30)
    ingest = parse_config(raw, "destinations.yaml").ingest
    assert (ingest.mode, ingest.prefix, ingest.quarantine_prefix, ingest.window_files) == ("window", "incoming/", "quarantine/", 500)
    assert "destinations.yaml: ingest.suffix: '.txt' names no input format" in broken(lambda raw: window_ingest(raw, suffix=".txt"))
    assert "ingest.quarantine_prefix: 'incoming/bad/' and prefix 'incoming/' overlap" in broken(
        lambda raw: window_ingest(raw, quarantine_prefix="incoming/bad/"))
    assert "ingest.window_seconds: must be at least 1 when window_files is above 10" in broken(
        lambda raw: window_ingest(raw, window_files=11, window_seconds=0))
    assert "ingest.max_file_bytes: Input should be less than or equal to 5368709120" in broken(
        lambda raw: window_ingest(raw, max_file_bytes=6 * 1024**3))


def test_window_ingest_refuses_mirror_destinations_and_the_row_count_band():
    def mirrored(raw):
        window_ingest(raw)
        raw["destinations"][1]["sync_mode"] = "mirror"
    assert "destinations.yaml: ingest.mode: window makes each window a run of some files: destinations ['google_dm'] have sync_mode mirror" in broken(mirrored)

    def banded(raw):
        window_ingest(raw)
        raw["quality"] = {}
    assert "destinations.yaml: quality.row_count_band: with ingest.mode window" in broken(banded)
    assert parse_config(copy.deepcopy(EXAMPLE), "destinations.yaml").ingest.mode == "marker"   # the default


@pytest.mark.parametrize("value, error", [
    ("maybe", r"\(google_dm\)\.connection\.consent\.ad_user_data: 'maybe': give granted, denied or \{column: "),
    ({"column": "user_id"}, r"\(google_dm\)\.connection\.consent\.ad_user_data\.column: 'user_id' is a membership column"),
    ({"column": "eea data"}, r"\(google_dm\)\.connection\.consent\.ad_user_data\.column: String should match pattern"),
])
def test_google_consent_is_a_fixed_value_or_an_input_column_and_a_wrong_one_is_named(value, error):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    google = next(d for d in raw["destinations"] if d["id"] == "google_dm")
    google["connection"]["consent"] = {"ad_user_data": value, "ad_personalization": "granted"}
    with pytest.raises(ConfigError, match=error):
        parse_config(raw, "destinations.yaml")
    google["connection"]["consent"] = {"ad_user_data": {"column": "eea_data"}, "ad_personalization": {"column": "eea_ads"}}
    config = parse_config(raw, "destinations.yaml")
    assert config.consent_sources() == {"google_dm": {"ad_user_data": "eea_data", "ad_personalization": "eea_ads"}}
    assert config.consent_columns == ("eea_ads", "eea_data")


@pytest.mark.parametrize("index, key, value", [
    (0, "consent", {"ad_user_data": "granted", "ad_personalization": "granted"}),   # Google's, not Meta's
    (0, "developer_token", {"env": "GOOGLE_ADS_DEVELOPER_TOKEN"}),
    (1, "app_secret", {"env": "META_APP_SECRET"}),                                   # Meta's, not Google's
    (2, "base_url", "https://partner.example"),
])
def test_a_connection_takes_only_its_own_profiles_keys(index, key, value):
    """Each profile's folder declares its connection (connectors/destinations/<name>/config.py):
    another platform's key is refused by name, not carried along unused."""
    message = broken(lambda raw: raw["destinations"][index]["connection"].update({key: value}))
    destination_id = EXAMPLE["destinations"][index]["id"]
    assert f"destinations.yaml: destinations[{index}] ({destination_id}).connection.{key}: unknown key" in message


def test_a_kind_that_is_not_the_profiles_is_named_on_the_profile():
    message = broken(lambda raw: raw["destinations"][0].update(kind="sftp"))
    assert message == "destinations.yaml: destinations[0] (meta_ads).profile: 'meta_custom_audiences' is a http_api profile, not sftp"
    assert "kind: Input should be 'http_api', 's3' or 'sftp'" in broken(lambda raw: raw["destinations"][0].update(kind="ftp"))
