"""Emails against the vendors' own code: Google's Data Manager utility (google-ads-datamanager-util,
`Formatter.format_email_address`) for Google's rule, and Meta's Business SDK
(`CustomAudience.format_params` with the email hash schema) for Meta's.

Every expected key is the reference's own output for the raw value. Where we refuse an address
the reference would still hash, the test names why (`OUR_STRICTER_REFUSALS`).
"""
import hashlib

import pytest
from facebook_business.adobjects.customaudience import CustomAudience
from google.ads.datamanager_util.format import Formatter
from pyspark.sql import functions as F

from audience_relay.connectors.destinations.registry import PROFILES
from audience_relay.transforms.identifiers import normalize_identifiers, with_match_key
from audience_relay.transforms.schemas import MEMBERSHIP

ACCEPTED = [
    "  John.Smith@Example.COM ",
    "user.name+NYC@Example.com",
    "Cloudy.SanFrancisco+shopping@gmail.com",
    "J.O.H.N@GoogleMail.com",
    "josé@example.com",
    "JOSÉ@Example.com",
    "ÜBER.straße@example.de",
    "user@bücher.de",
    "USER@BÜCHER.DE",
    "user@xn--bcher-kva.de",
    "почта@пример.рф",
    "用户@例子.广告",
    "o'connor@example.ie",
]
# The references hash these too; we refuse them as `invalid_email` and keep the rows.
OUR_STRICTER_REFUSALS = {
    "@example.com": "no local part (Google's utility raises; Meta's SDK would hash it)",
    "none@": "no domain",
    "a@b@example.com": "two @",
    "jane doe@example.org": "whitespace inside (Google's utility raises: 'intermediate whitespace')",
    "jane\u00a0doe@example.org": "no-break space inside",
    "+promo@gmail.com": "nothing left of a gmail account once canonical (Google's utility raises)",
    "john..doe@example.com": "an empty dot-atom in the local part (RFC 5321)",
    "john@localhost": "a domain without a dot",
    "john@example.com.": "a domain ending with a dot",
    "n/a": "not an address",
}


def google_reference(raw: str) -> str | None:
    try:
        return hashlib.sha256(Formatter().format_email_address(raw).encode()).hexdigest()
    except ValueError:
        return None


def meta_reference(raw: str) -> str:
    return CustomAudience.format_params(CustomAudience.Schema.email_hash, [raw])["payload"]["data"][0]


def keys_for(spark, profile_name: str, values: list[str]) -> dict[str, tuple[str | None, str | None]]:
    rule = PROFILES[profile_name].identifiers["email"]
    rows = spark.createDataFrame([(f"u{i}", "email", v, "seg", None) for i, v in enumerate(values)], MEMBERSHIP)
    normalized = (
        rows.withColumn("source_file", F.lit("day1.csv")).withColumn("read_error", F.lit(None).cast("string"))
        .transform(normalize_identifiers, "1")
        .withColumn("hash_sha256", F.lit(rule.hash_sha256))
        .withColumn("phone_with_plus", F.lit(rule.phone_with_plus))
        .withColumn("gmail_canonical", F.lit(rule.gmail_canonical))
        .withColumn("id_normalized", F.coalesce("id_normalized", F.lit("")))
        .transform(with_match_key)
    )
    return {values[int(row.user_id[1:])]: (row.match_key if row.reject_reason is None else None, row.reject_reason) for row in normalized.collect()}


def test_google_keys_are_what_googles_utility_computes(spark):
    keys = keys_for(spark, "google_data_manager", ACCEPTED)
    assert keys == {raw: (google_reference(raw), None) for raw in ACCEPTED}


def test_meta_keys_are_what_metas_sdk_computes(spark):
    keys = keys_for(spark, "meta_custom_audiences", ACCEPTED)
    assert keys == {raw: (meta_reference(raw), None) for raw in ACCEPTED}


def test_addresses_we_refuse_keep_their_rows_with_a_reason(spark):
    keys = keys_for(spark, "google_data_manager", list(OUR_STRICTER_REFUSALS))
    assert keys == {raw: (None, "invalid_email") for raw in OUR_STRICTER_REFUSALS}


@pytest.mark.parametrize("raw", ["jane doe@example.org", "+promo@gmail.com", "@example.com"])
def test_googles_utility_refuses_what_it_says_it_refuses(raw):
    assert google_reference(raw) is None
