"""Identifier normalization and the per-destination match key.

Normalization follows the destinations' published rules:
- email: whitespace removed (Google Data Manager removes intermediate whitespace too),
  lower-cased, then validated; Google additionally canonicalizes gmail.com/googlemail.com
  local parts (dots and a `+tag` removed), applied per destination by `with_match_key`; a
  gmail address with nothing left once canonical (`+tag@gmail.com`) is invalid for every
  destination (no Gmail account has it).
- phone: E.164 (`+` and country code). Numbers without `+`/`00` are national: leading trunk
  zeros dropped and the default country code prefixed. Meta wants the digits without `+`.
- maid (IDFA/GAID): lower-case UUID with dashes, never hashed by Meta; the all-zero id is the
  "limit ad tracking" value and identifies nobody.
- external_id: trimmed, case kept.
Unusable rows are never dropped here: they carry a `reject_reason` code. Two codes guard
against bad input rather than bad identifiers: `invalid_encoding` (a U+FFFD replacement
character, which Spark's CSV reader puts where the bytes were not UTF-8, so two different
latin-1 ids could become one) and `invalid_user_id` (over 256 characters: a profile id that
long is a broken record, such as a quoting error that swallowed the rest of a file).
"""
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from transforms.id_types import ID_TYPES

WHITESPACE = r"[\s\p{Z}\x{200B}\x{FEFF}]+"
EMAIL_PATTERN = (
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.[a-z]{2,63}$"
)
EMAIL_MAX_LENGTH = 254
GMAIL_DOMAINS = ("gmail.com", "googlemail.com")
PHONE_ALLOWED = r"^\+?[0-9()\-./ ]+$"
E164_DIGITS = r"^[1-9][0-9]{7,14}$"
NANP_DIGITS = r"^1[2-9][0-9]{9}$"
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
ZERO_MAID = "00000000-0000-0000-0000-000000000000"
EXTERNAL_ID_MAX_LENGTH = 256
USER_ID_MAX_LENGTH = 256
REPLACEMENT_CHARACTER = "\ufffd"


def strip_whitespace(column: str | Column) -> Column:
    """Trim Unicode whitespace at both ends (Spark's `trim` only removes ASCII spaces)."""
    return F.regexp_replace(column, f"^{WHITESPACE}|{WHITESPACE}$", "")


def _per_type(id_type: str, value: Column) -> Column:
    """`value` for rows of `id_type`, null for others, so no row pays for another type's rules."""
    return F.when(F.col("clean_id_type") == id_type, value)


def _phone_e164_digits(default_country_code: str) -> Column:
    """E.164 digits (no `+`) from the whitespace-free value and its digits."""
    national = F.regexp_replace("phone_digits", "^0+", "")
    # North American numbers are often written with their country code but without a `+`.
    written_with_nanp_code = F.lit(default_country_code == "1") & (F.length(national) == 11) & national.startswith("1")
    return (
        F.when(F.col("compact").startswith("+"), F.col("phone_digits"))
        .when(F.col("phone_digits").startswith("00"), F.substring("phone_digits", 3, 32))
        .when(written_with_nanp_code, national)
        .otherwise(F.concat(F.lit(default_country_code), national))
    )


def _dashed_uuid(compact: Column) -> Column:
    return F.concat_ws(
        "-",
        F.substring(compact, 1, 8),
        F.substring(compact, 9, 4),
        F.substring(compact, 13, 4),
        F.substring(compact, 17, 4),
        F.substring(compact, 21, 12),
    )


def normalize_identifiers(df: DataFrame, default_country_code: str) -> DataFrame:
    """Add `id_normalized` (canonical form per id type) and `reject_reason` (null when usable).

    Expects the raw membership columns plus `source_file` and `read_error` (set by the reader
    for records it could not parse). Built as successive projections so that each regular
    expression runs once per row: Spark does not share subexpressions across the branches of
    a `when` chain, and inlining them there made normalization five times slower.
    """
    if not default_country_code.isdigit():
        raise ValueError(f"default_country_code must be digits, got {default_country_code!r}")
    raw = ["id_value", "updated_at", "source_file", "read_error"]
    cleaned = df.select(
        *raw,
        strip_whitespace("user_id").alias("user_id"),
        strip_whitespace("segment_id").alias("segment_id"),
        F.lower(strip_whitespace("id_type")).alias("clean_id_type"),
        F.regexp_replace("id_value", WHITESPACE, "").alias("compact"),
    )
    lowered = F.lower("compact")
    typed = cleaned.select(
        *raw, "user_id", "segment_id", "clean_id_type", "compact",
        _per_type("email", lowered).alias("email"),
        # "+44 (0)20 ..." writes the trunk zero that international dialling drops.
        _per_type("phone", F.regexp_replace(F.regexp_replace("compact", r"\(0\)", ""), "[^0-9]", "")).alias("phone_digits"),
        _per_type("maid", F.when(lowered.rlike("^[0-9a-f]{32}$"), _dashed_uuid(lowered)).otherwise(lowered)).alias("maid"),
        _per_type("external_id", strip_whitespace("id_value")).alias("external_id"),
    )
    formatted = typed.select("*", _per_type("phone", _phone_e164_digits(default_country_code)).alias("e164"))

    id_type = F.col("clean_id_type")
    # Length first: `And` stops at a false left side, and Java's regex engine recurses once per
    # repeated group, so a 1 MB "a.a.a...@x.com" would overflow the stack and kill the executor.
    is_valid_email = (F.length("email") <= EMAIL_MAX_LENGTH) & F.col("email").rlike(EMAIL_PATTERN) & ~_gmail_without_account(F.col("email"))
    is_valid_phone = (
        F.col("compact").rlike(PHONE_ALLOWED)
        & F.col("e164").rlike(E164_DIGITS)
        & (~F.col("e164").startswith("1") | F.col("e164").rlike(NANP_DIGITS))
    )
    has_replacement_character = (
        F.col("user_id").contains(REPLACEMENT_CHARACTER)
        | F.col("segment_id").contains(REPLACEMENT_CHARACTER)
        | id_type.contains(REPLACEMENT_CHARACTER)
        | F.col("id_value").contains(REPLACEMENT_CHARACTER)
    )
    reject_reason = (
        F.when(F.col("read_error").isNotNull(), "malformed_record")
        .when(has_replacement_character, "invalid_encoding")
        .when(F.coalesce(F.col("user_id"), F.lit("")) == "", "missing_user_id")
        .when(F.length("user_id") > USER_ID_MAX_LENGTH, "invalid_user_id")
        .when(F.coalesce(F.col("segment_id"), F.lit("")) == "", "missing_segment_id")
        .when(F.coalesce(id_type, F.lit("")) == "", "missing_id_type")
        .when(~id_type.isin(*ID_TYPES), "unknown_id_type")
        .when(F.coalesce(F.col("compact"), F.lit("")) == "", "missing_id_value")
        .when((id_type == "email") & ~is_valid_email, "invalid_email")
        .when((id_type == "phone") & ~is_valid_phone, "invalid_phone")
        .when((id_type == "maid") & ~F.col("maid").rlike(UUID_PATTERN), "invalid_maid")
        .when((id_type == "maid") & (F.col("maid") == ZERO_MAID), "zero_maid")
        .when((id_type == "external_id") & (F.length("external_id") > EXTERNAL_ID_MAX_LENGTH), "invalid_external_id")
    )
    id_normalized = F.coalesce("email", F.concat(F.lit("+"), F.col("e164")), "maid", "external_id")
    return formatted.select("*", reject_reason.alias("reject_reason")).select(
        "user_id",
        id_type.alias("id_type"),
        "id_value",
        "segment_id",
        "updated_at",
        "source_file",
        F.when(F.col("reject_reason").isNull(), id_normalized).alias("id_normalized"),
        "reject_reason",
    )


def _is_gmail(email: Column) -> Column:
    return F.substring_index(email, "@", -1).isin(*GMAIL_DOMAINS)


def _gmail_account(email: Column) -> Column:
    """The local part as Gmail reads it: the `+tag` and every dot removed."""
    untagged = F.regexp_extract(F.substring_index(email, "@", 1), r"^([^+]*)", 1)
    return F.regexp_replace(untagged, r"\.", "")


def _gmail_without_account(email: Column) -> Column:
    """A gmail.com/googlemail.com address whose canonical local part is empty (`+tag@gmail.com`):
    no Gmail account has it, and Google would be sent the hash of `@gmail.com`."""
    return _is_gmail(email) & (_gmail_account(email) == "")


def _gmail_canonical(email: Column) -> Column:
    return F.concat(_gmail_account(email), F.lit("@"), F.substring_index(email, "@", -1))


def with_match_key(df: DataFrame) -> DataFrame:
    """Add `match_key`: the identifier exactly as the destination wants it, hashed or not.

    Reads the rule flags (`hash_sha256`, `phone_with_plus`, `gmail_canonical`) that the
    audience mapping join attached to each row.
    """
    formatted = (
        F.when((F.col("id_type") == "phone") & ~F.col("phone_with_plus"), F.substring("id_normalized", 2, 32))
        .when((F.col("id_type") == "email") & F.col("gmail_canonical") & _is_gmail(F.col("id_normalized")), _gmail_canonical(F.col("id_normalized")))
        .otherwise(F.col("id_normalized"))
    )
    return df.withColumn("match_key", F.when(F.col("hash_sha256"), F.sha2(formatted, 256)).otherwise(formatted))
