import hashlib

from chispa import assert_df_equality
from pyspark.sql import functions as F

from audience_relay.transforms.audiences import consent_opt_outs, map_to_audiences, mark_opted_out, to_members
from audience_relay.transforms.consent_signals import with_member_consent
from audience_relay.transforms.schemas import AUDIENCE_MAPPING, CONSENT, MEMBERS


def mapping(spark, rows):
    return spark.createDataFrame(rows, AUDIENCE_MAPPING)


def valid_rows(spark, rows):
    return spark.createDataFrame(rows, "user_id string, id_type string, segment_id string, id_normalized string")


def test_star_scope_blocks_every_destination_and_named_scope_only_its_own(spark):
    consent = spark.createDataFrame([("u1", "*"), ("u2", "meta"), ("u3", "unknown_dest"), ("u2", " * ")], CONSENT)
    expected = spark.createDataFrame(
        [("u1", "google"), ("u1", "meta"), ("u2", "google"), ("u2", "meta")], "user_id string, destination_id string"
    )
    assert_df_equality(
        consent_opt_outs(consent, ["meta", "google"]), expected, ignore_row_order=True, ignore_nullable=True
    )


def test_rows_fan_out_to_each_destination_that_maps_and_accepts_them(spark):
    rows = valid_rows(spark, [("u1", "email", "s1", "a@x.com"), ("u2", "phone", "s1", "+14155550123"), ("u3", "email", "s9", "b@x.com")])
    audiences = mapping(
        spark,
        [
            ("s1", "email", "meta", "m_aud", True, False, False),
            ("s1", "phone", "meta", "m_aud", True, False, False),
            ("s1", "email", "google", "g_aud", True, True, True),
        ],
    )
    got = map_to_audiences(rows, audiences).select("user_id", "destination_id", "audience_id")
    expected = spark.createDataFrame(
        [("u1", "meta", "m_aud"), ("u2", "meta", "m_aud"), ("u1", "google", "g_aud")],
        "user_id string, destination_id string, audience_id string",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_opted_out_user_is_flagged_only_for_that_destination(spark):
    mapped = spark.createDataFrame(
        [("u1", "meta"), ("u1", "google"), ("u2", "meta"), ("u2", "meta")], "user_id string, destination_id string"
    )
    opt_outs = spark.createDataFrame([("u1", "meta"), ("u2", "google")], "user_id string, destination_id string")
    expected = spark.createDataFrame(
        [("u1", "meta", True), ("u1", "google", False), ("u2", "meta", False), ("u2", "meta", False)],
        "user_id string, destination_id string, opted_out boolean",
    )
    for broadcast in (True, False):
        got = mark_opted_out(mapped, opt_outs, broadcast)
        assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_duplicate_rows_collapse_into_one_member_counting_their_rows(spark):
    rows = valid_rows(
        spark,
        [("u1", "email", "s1", "a@x.com"), ("u1", "email", "s2", "a@x.com"), ("u2", "email", "s1", "b@x.com")],
    )
    audiences = mapping(
        spark, [("s1", "email", "meta", "aud", True, False, False), ("s2", "email", "meta", "aud", True, False, False)]
    )
    members = map_to_audiences(rows, audiences).transform(with_member_consent, {}).withColumn("opted_out", F.lit(False)).transform(to_members)
    digest = lambda s: hashlib.sha256(s.encode()).hexdigest()  # noqa: E731
    expected = spark.createDataFrame(
        [("meta", "aud", "email", digest("a@x.com"), None, None, 2, 0), ("meta", "aud", "email", digest("b@x.com"), None, None, 1, 0)], MEMBERS
    )
    assert_df_equality(members, expected, ignore_row_order=True, ignore_nullable=True)
