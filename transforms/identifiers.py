"""Identifier normalization and the per-destination match key.

Normalization follows the destinations' published rules:
- email: whitespace removed (Google Data Manager removes intermediate whitespace too),
  lower-cased, then validated; Google additionally canonicalizes gmail.com/googlemail.com
  local parts (dots and a `+tag` removed), applied per destination by `with_match_key`.
- phone: E.164 (`+` and country code). Numbers without `+`/`00` are national: leading trunk
  zeros dropped and the default country code prefixed. Meta wants the digits without `+`.
- maid (IDFA/GAID): lower-case UUID with dashes, never hashed by Meta; the all-zero id is the
  "limit ad tracking" value and identifies nobody.
- external_id: trimmed, case kept.
Unusable rows are never dropped here: they carry a `reject_reason` code.
"""
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from transforms.schemas import ID_TYPES

WHITESPACE = r"[\s\p{Z}\x{200B}\x{FEFF}]+"
EMAIL_PATTERN = (
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.[a-z]{2,63}$"
)
EMAIL_MAX_LENGTH = 254
PHONE_ALLOWED = r"^\+?[0-9()\-./ ]+$"
E164_DIGITS = r"^[1-9][0-9]{7,14}$"
NANP_DIGITS = r"^1[2-9][0-9]{9}$"
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
ZERO_MAID = "00000000-0000-0000-0000-000000000000"
EXTERNAL_ID_MAX_LENGTH = 256


def _blank(column: str) -> Column:
    return F.col(column).isNull() | (F.regexp_replace(F.col(column), WHITESPACE, "") == "")


def _email() -> Column:
    return F.lower(F.regexp_replace("id_value", WHITESPACE, ""))


def _phone_e164_digits(default_country_code: str) -> Column:
    stripped = F.regexp_replace("id_value", WHITESPACE, "")
    digits = F.regexp_replace(stripped, "[^0-9]", "")
    national = F.regexp_replace(digits, "^0+", "")
    # North American numbers are often written with their country code but without a `+`.
    written_with_nanp_code = (
        F.lit(default_country_code == "1") & (F.length(national) == 11) & national.startswith("1")
    )
    return (
        F.when(stripped.startswith("+"), digits)
        .when(digits.startswith("00"), F.substring(digits, 3, 32))
        .when(written_with_nanp_code, national)
        .otherwise(F.concat(F.lit(default_country_code), national))
    )


def _maid() -> Column:
    compact = F.lower(F.regexp_replace("id_value", WHITESPACE, ""))
    dashed = F.concat_ws(
        "-",
        F.substring(compact, 1, 8),
        F.substring(compact, 9, 4),
        F.substring(compact, 13, 4),
        F.substring(compact, 17, 4),
        F.substring(compact, 21, 12),
    )
    return F.when(compact.rlike("^[0-9a-f]{32}$"), dashed).otherwise(compact)


def normalize_identifiers(df: DataFrame, default_country_code: str) -> DataFrame:
    """Add `id_normalized` (canonical form per id type) and `reject_reason` (null when usable).

    Expects the raw membership columns plus `source_file` and `read_error` (set by the reader
    for records it could not parse).
    """
    if not default_country_code.isdigit():
        raise ValueError(f"default_country_code must be digits, got {default_country_code!r}")
    id_type = F.lower(F.trim("id_type"))
    email = _email()
    phone_digits = _phone_e164_digits(default_country_code)
    maid = _maid()
    external_id = F.trim("id_value")

    is_valid_email = email.rlike(EMAIL_PATTERN) & (F.length(email) <= EMAIL_MAX_LENGTH)
    is_valid_phone = (
        F.regexp_replace("id_value", WHITESPACE, "").rlike(PHONE_ALLOWED)
        & phone_digits.rlike(E164_DIGITS)
        & (~phone_digits.startswith("1") | phone_digits.rlike(NANP_DIGITS))
    )
    is_valid_external_id = F.length(external_id) <= EXTERNAL_ID_MAX_LENGTH

    reject_reason = (
        F.when(F.col("read_error").isNotNull(), "malformed_record")
        .when(_blank("user_id"), "missing_user_id")
        .when(_blank("segment_id"), "missing_segment_id")
        .when(_blank("id_type"), "missing_id_type")
        .when(~id_type.isin(*ID_TYPES), "unknown_id_type")
        .when(_blank("id_value"), "missing_id_value")
        .when((id_type == "email") & ~is_valid_email, "invalid_email")
        .when((id_type == "phone") & ~is_valid_phone, "invalid_phone")
        .when((id_type == "maid") & ~maid.rlike(UUID_PATTERN), "invalid_maid")
        .when((id_type == "maid") & (maid == ZERO_MAID), "zero_maid")
        .when((id_type == "external_id") & ~is_valid_external_id, "invalid_external_id")
    )
    id_normalized = (
        F.when(id_type == "email", email)
        .when(id_type == "phone", F.concat(F.lit("+"), phone_digits))
        .when(id_type == "maid", maid)
        .when(id_type == "external_id", external_id)
    )
    return df.select(
        F.trim("user_id").alias("user_id"),
        id_type.alias("id_type"),
        "id_value",
        F.trim("segment_id").alias("segment_id"),
        "updated_at",
        "source_file",
        F.when(reject_reason.isNull(), id_normalized).alias("id_normalized"),
        reject_reason.alias("reject_reason"),
    )


def _gmail_canonical(email: Column) -> Column:
    local = F.substring_index(email, "@", 1)
    domain = F.substring_index(email, "@", -1)
    untagged = F.regexp_extract(local, r"^([^+]*)", 1)
    return F.concat(F.regexp_replace(untagged, r"\.", ""), F.lit("@"), domain)


def with_match_key(df: DataFrame) -> DataFrame:
    """Add `match_key`: the identifier exactly as the destination wants it, hashed or not.

    Reads the rule flags (`hash_sha256`, `phone_with_plus`, `gmail_canonical`) that the
    audience mapping join attached to each row.
    """
    is_gmail = F.substring_index("id_normalized", "@", -1).isin("gmail.com", "googlemail.com")
    formatted = (
        F.when((F.col("id_type") == "phone") & ~F.col("phone_with_plus"), F.substring("id_normalized", 2, 32))
        .when((F.col("id_type") == "email") & F.col("gmail_canonical") & is_gmail, _gmail_canonical(F.col("id_normalized")))
        .otherwise(F.col("id_normalized"))
    )
    return df.withColumn("match_key", F.when(F.col("hash_sha256"), F.sha2(formatted, 256)).otherwise(formatted))
