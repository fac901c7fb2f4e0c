"""Identifier normalization and the per-destination match key.

Normalization follows the destinations' published rules:
- email: trimmed, lower-cased (Unicode), then validated: one `@`, no whitespace inside, dot-atoms
  of letters (any script), digits and RFC 5322's symbols before it, a domain of dot-separated
  labels (IDN in Unicode or punycode) after it. That is the form Meta's SDK hashes. Google's rule
  adds gmail.com/googlemail.com canonicalization (dots and a `+tag` removed), applied per
  destination by `with_match_key`, as Google's Data Manager utility does; a gmail address with
  nothing left once canonical (`+tag@gmail.com`) is invalid for every destination.
- phone: valid and in E.164 (`+` and country code) exactly as libphonenumber reads it with the
  default country code's main region (transforms/phone_numbers.py): trunk prefixes, dialling
  prefixes, extensions and `tel:` URIs as the library handles them. Meta wants no `+`.
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

from audience_relay.transforms.id_types import ID_TYPES
from audience_relay.transforms.phone_numbers import with_e164

WHITESPACE = r"[\s\x{0B}\x{1C}-\x{1F}\x{85}\p{Z}\x{200B}\x{FEFF}]+"
# The characters WHITESPACE matches: what Python's str.strip() removes (the destinations' SDKs trim
# with it; Java's \s is ASCII only, so the information separators U+001C-U+001F and the next-line
# character U+0085 are named), Unicode's separators (\p{Z}), the zero-width space and the byte-order
# mark. Trimming and removing them as a character set runs without the regex engine
# (tests/unit/test_identifiers.py checks the set against the regex over every code point).
WHITESPACE_CHARACTERS = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\u00a0\u1680" + "".join(map(chr, range(0x2000, 0x200C)))
                         + "\u2028\u2029\u202f\u205f\u3000\ufeff")
_LOCAL_ATOM = r"[\p{L}\p{M}\p{N}!#$%&'*+/=?^_`{|}~-]+"
_DOMAIN_LABEL = r"[\p{L}\p{M}\p{N}]([\p{L}\p{M}\p{N}-]{0,61}[\p{L}\p{M}\p{N}])?"
_TOP_LEVEL_DOMAIN = r"(\p{L}[\p{L}\p{M}]{1,62}|xn--[a-z0-9-]{1,59})"
# RFC 6531 (internationalized) addresses without quoted local parts or address literals.
EMAIL_PATTERN = f"^{_LOCAL_ATOM}(\\.{_LOCAL_ATOM})*@({_DOMAIN_LABEL}\\.)+{_TOP_LEVEL_DOMAIN}$"
EMAIL_MAX_LENGTH = 254
GMAIL_DOMAINS = ("gmail.com", "googlemail.com")
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
ZERO_MAID = "00000000-0000-0000-0000-000000000000"
EXTERNAL_ID_MAX_LENGTH = 256
USER_ID_MAX_LENGTH = 256
REPLACEMENT_CHARACTER = "\ufffd"


def strip_whitespace(column: str | Column) -> Column:
    """Trim Unicode whitespace at both ends (Spark's `trim` only removes ASCII spaces)."""
    return F.btrim(F.col(column) if isinstance(column, str) else column, F.lit(WHITESPACE_CHARACTERS))


def remove_whitespace(column: str) -> Column:
    """Remove Unicode whitespace wherever it is."""
    return F.translate(column, WHITESPACE_CHARACTERS, "")


def _per_type(id_type: str, value: Column) -> Column:
    """`value` for rows of `id_type`, null for others, so no row pays for another type's rules."""
    return F.when(F.col("clean_id_type") == id_type, value)


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
    for records it could not parse); any other column is passed through unchanged, last. Built as successive projections so that each regular
    expression runs once per row: Spark does not share subexpressions across the branches of
    a `when` chain, and inlining them there made normalization five times slower.
    """
    reader_columns = {"user_id", "id_type", "segment_id", "id_value", "updated_at", "source_file", "read_error"}
    carried = [c for c in df.columns if c not in reader_columns]   # passed through as they are (consent columns)
    raw = ["id_value", "updated_at", "source_file", "read_error", *carried]
    cleaned = df.select(
        *raw,
        strip_whitespace("user_id").alias("user_id"),
        strip_whitespace("segment_id").alias("segment_id"),
        F.lower(strip_whitespace("id_type")).alias("clean_id_type"),
        remove_whitespace("id_value").alias("compact"),
    )
    lowered = F.lower("compact")
    typed = cleaned.select(
        *raw, "user_id", "segment_id", "clean_id_type", "compact",
        _per_type("email", F.lower(strip_whitespace("id_value"))).alias("email"),
        _per_type("phone", strip_whitespace("id_value")).alias("phone"),
        _per_type("maid", F.when(lowered.rlike("^[0-9a-f]{32}$"), _dashed_uuid(lowered)).otherwise(lowered)).alias("maid"),
        _per_type("external_id", strip_whitespace("id_value")).alias("external_id"),
    )
    formatted = typed.transform(with_e164, "phone", default_country_code, "e164")

    id_type = F.col("clean_id_type")
    # Length first: `And` stops at a false left side, and Java's regex engine recurses once per
    # repeated group, so a 1 MB "a.a.a...@x.com" would overflow the stack and kill the executor.
    is_valid_email = (
        (F.length("email") <= EMAIL_MAX_LENGTH)
        & ~F.col("email").rlike(WHITESPACE)
        & F.col("email").rlike(EMAIL_PATTERN)
        & ~_gmail_without_account(F.col("email"))
    )
    is_valid_phone = F.col("e164").isNotNull()
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
    id_normalized = F.coalesce("email", "e164", "maid", "external_id")
    return formatted.select("*", reject_reason.alias("reject_reason")).select(
        "user_id",
        id_type.alias("id_type"),
        "id_value",
        "segment_id",
        "updated_at",
        "source_file",
        F.when(F.col("reject_reason").isNull(), id_normalized).alias("id_normalized"),
        "reject_reason",
        *carried,
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
