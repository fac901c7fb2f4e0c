"""Every registered profile's identifier rules as test vectors: the same normalized ids, and what
each destination is sent for them (hashed or not, the phone with or without `+`, Gmail's
canonical form), computed by the transform that builds match keys from the profile's rules."""
from hashlib import sha256

from pyspark.sql.types import BooleanType, StringType, StructField, StructType

from audience_relay.connectors.destinations.registry import PROFILES
from audience_relay.transforms.identifiers import with_match_key

NORMALIZED = {
    "email": "cloudy.san.francisco+shopping@gmail.com",
    "phone": "+14155550123",
    "maid": "aece52e7-03ee-455a-b3c4-e57283966239",
    "external_id": "crm-000123",
}


def _hex(value: str) -> str:
    return sha256(value.encode()).hexdigest()


EMAIL, GMAIL_CANONICAL = _hex(NORMALIZED["email"]), _hex("cloudysanfrancisco@gmail.com")
PHONE_E164, PHONE_DIGITS = _hex("+14155550123"), _hex("14155550123")
MAID_CLEAR, MAID_HASHED, EXTERNAL = NORMALIZED["maid"], _hex(NORMALIZED["maid"]), _hex(NORMALIZED["external_id"])
SENT = {
    "meta_custom_audiences": {"email": EMAIL, "phone": PHONE_DIGITS, "maid": MAID_CLEAR, "external_id": EXTERNAL},
    "google_data_manager": {"email": GMAIL_CANONICAL, "phone": PHONE_E164, "maid": MAID_CLEAR},
    "tiktok_audiences": {"email": EMAIL, "phone": PHONE_E164},
    "snapchat_audience_match": {"email": EMAIL, "phone": PHONE_DIGITS, "maid": MAID_HASHED},
    "linkedin_dmp_segments": {"email": EMAIL, "maid": MAID_CLEAR},
    "pinterest_customer_lists": {"email": EMAIL, "maid": MAID_HASHED},
    "x_custom_audiences": {"email": EMAIL, "phone": PHONE_E164, "maid": MAID_HASHED, "external_id": NORMALIZED["external_id"]},
    "sftp_gzip_csv": {"email": EMAIL, "phone": PHONE_E164, "maid": MAID_HASHED, "external_id": EXTERNAL},
    "s3_objects": {"email": EMAIL, "phone": PHONE_E164, "maid": MAID_CLEAR, "external_id": EXTERNAL},
}
RULES = StructType([StructField("profile", StringType()), StructField("id_type", StringType()), StructField("id_normalized", StringType()),
                    StructField("hash_sha256", BooleanType()), StructField("phone_with_plus", BooleanType()),
                    StructField("gmail_canonical", BooleanType())])


def test_each_profile_sends_each_id_type_it_accepts_as_its_platform_asks(spark):
    assert set(SENT) == set(PROFILES)
    rows = [(name, id_type, NORMALIZED[id_type], rule.hash_sha256, rule.phone_with_plus, rule.gmail_canonical)
            for name, profile in PROFILES.items() for id_type, rule in profile.identifiers.items()]
    sent = {}
    for row in spark.createDataFrame(rows, RULES).transform(with_match_key).collect():
        sent.setdefault(row["profile"], {})[row["id_type"]] = row["match_key"]
    assert sent == SENT
