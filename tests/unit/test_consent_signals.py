"""Google's consent signals read from input columns: validated per row, aggregated per member."""
import hashlib

from chispa import assert_df_equality
from pyspark.sql import functions as F

from audience_relay.transforms.audiences import to_members
from audience_relay.transforms.consent_signals import flag_invalid_consent, with_member_consent
from audience_relay.transforms.schemas import MEMBERS

ROWS = "user_id string, destination_id string, audience_id string, id_type string, id_normalized string, " \
       "hash_sha256 boolean, phone_with_plus boolean, gmail_canonical boolean, eea_data string, eea_ads string"


def test_values_are_trimmed_and_lower_cased_blank_is_unspecified_and_anything_else_rejects_the_row(spark):
    rows = spark.createDataFrame(
        [("u1", None, " Granted ", "DENIED"), ("u2", None, "", None), ("u3", None, "yes", "granted"), ("u4", "invalid_email", "no", None),
         ("u5", None, "granted", "true"), ("u6", None, "\u00a0denied\u00a0", " ")],
        "user_id string, reject_reason string, eea_data string, eea_ads string")
    got = flag_invalid_consent(rows, ("eea_data", "eea_ads")).select("user_id", "reject_reason")
    expected = spark.createDataFrame(
        [("u1", None), ("u2", None), ("u3", "invalid_consent"), ("u4", "invalid_email"), ("u5", "invalid_consent"), ("u6", None)],
        "user_id string, reject_reason string")
    assert_df_equality(got, expected, ignore_row_order=True)


def test_no_consent_column_leaves_the_rows_as_they_are(spark):
    rows = spark.createDataFrame([("u1", None)], "user_id string, reject_reason string")
    assert flag_invalid_consent(rows, ()) is rows


def test_a_member_denies_if_any_row_denies_and_grants_only_if_every_row_grants(spark):
    """Only the destination that reads the columns gets signals; the other's stay unspecified."""
    def row(user, destination, email, data, ads):
        return (user, destination, "aud", "email", email, True, False, False, data, ads)

    rows = spark.createDataFrame([
        row("u1", "google", "a@x.com", "granted", "granted"), row("u2", "google", "a@x.com", "GRANTED", "denied"),   # same key
        row("u3", "google", "b@x.com", "granted", "granted"), row("u4", "google", "b@x.com", None, "granted"),
        row("u5", "google", "c@x.com", "granted", " granted "), row("u9", "google", "c@x.com", "denied", "denied"),
        row("u1", "meta", "a@x.com", "denied", "denied"),
    ], ROWS)
    got = (rows.transform(with_member_consent, {"google": {"ad_user_data": "eea_data", "ad_personalization": "eea_ads"}})
           .withColumn("opted_out", F.col("user_id") == "u9").transform(to_members))
    key = lambda email: hashlib.sha256(email.encode()).hexdigest()  # noqa: E731
    expected = spark.createDataFrame([
        ("google", "aud", "email", key("a@x.com"), "granted", "denied", 2, 0),
        ("google", "aud", "email", key("b@x.com"), None, "granted", 2, 0),     # one row left ad user data unspecified
        ("google", "aud", "email", key("c@x.com"), "granted", "granted", 1, 1),  # u9 denies, but consent removed u9's row
        ("meta", "aud", "email", key("a@x.com"), None, None, 1, 0),
    ], MEMBERS)
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_one_signal_from_a_column_leaves_the_other_to_the_config(spark):
    rows = spark.createDataFrame([("u1", "google", "aud", "email", "a@x.com", False, False, False, "denied", "granted")], ROWS)
    got = rows.transform(with_member_consent, {"google": {"ad_user_data": "eea_data"}})
    assert [(r.ad_user_data, r.ad_personalization) for r in got.collect()] == [("denied", None)]
    assert "eea_data" not in got.columns and "eea_ads" in got.columns   # only the columns read are consumed
