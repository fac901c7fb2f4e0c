"""Normalization and match keys, checked against vectors computed with hashlib."""
import functools
import hashlib

import phonenumbers
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, StringType, StructField, StructType

from audience_relay.transforms.identifiers import normalize_identifiers, with_match_key
from audience_relay.transforms.schemas import MEMBERSHIP


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def raw_rows(spark, rows):
    """Build reader output: membership columns plus source_file and read_error."""
    frame = spark.createDataFrame([(u, t, v, s, None) for u, t, v, s in rows], MEMBERSHIP)
    return frame.withColumn("source_file", F.lit("day1.csv")).withColumn("read_error", F.lit(None).cast("string"))


def normalized(spark, id_type, value, country="1"):
    row = raw_rows(spark, [("u1", id_type, value, "seg_1")]).transform(normalize_identifiers, country).first()
    return row["id_normalized"], row["reject_reason"]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("  John.Smith@Example.COM ", "john.smith@example.com"),
        ("user.name+NYC@Example.com", "user.name+nyc@example.com"),
        ("\tUPPER@SUB.EXAMPLE.CO.UK\n", "upper@sub.example.co.uk"),
        # Whitespace as Python's str.strip() (the destinations' SDKs) sees it: the next-line character
        # U+0085 too, which Java's `$` also let through at the end as a line terminator, kept in the key.
        ("a@b.com\u0085", "a@b.com"),
        ("\u001ca@b.com\u001f", "a@b.com"),
    ],
)
def test_email_is_trimmed_and_lowercased(spark, raw, expected):
    assert normalized(spark, "email", raw) == (expected, None)


@pytest.mark.parametrize("raw", ["not-an-email", "a@b", "a@@b.com", "@example.com", "a..b@example.com", "n/a", "a@exa_mple.com"])
def test_invalid_email_is_rejected_with_reason(spark, raw):
    assert normalized(spark, "email", raw) == (None, "invalid_email")


@pytest.mark.parametrize("raw", ["+tag@gmail.com", ".+shopping@googlemail.com", "...@gmail.com"])
def test_a_gmail_address_with_no_account_left_once_canonical_is_invalid(spark, raw):
    """Google's canonical form drops dots and the `+tag`: nothing would remain of these but
    `@gmail.com`, whose hash matches nobody, and no Gmail account can have such an address."""
    assert normalized(spark, "email", raw) == (None, "invalid_email")


@pytest.mark.parametrize("raw, expected", [("a.b+c@gmail.com", "a.b+c@gmail.com"), ("+tag@example.com", "+tag@example.com")])
def test_a_gmail_address_with_an_account_part_stays_valid(spark, raw, expected):
    assert normalized(spark, "email", raw) == (expected, None)


def test_overlong_email_is_rejected(spark):
    assert normalized(spark, "email", "a" * 250 + "@example.com") == (None, "invalid_email")


# The defects found against libphonenumber (issue 21), and usual shapes; see test_phone_numbers.py.
PHONES = [
    ("(415) 555-0123", "1"), ("+1 415.555.0123", "1"), ("+44 (0)20 7946 0958", "1"), ("020 7946 0958", "44"),
    ("06 1234 5678", "39"), ("8 (495) 123-45-67", "7"), ("06 1 234 5678", "36"), ("07911 123456", "1"),
    ("1 415 555 0132", "44"), ("011 44 20 7946 0958", "1"), ("tel:+1-415-555-0132", "1"),
    ("+1 415 555 0132 x123", "1"), ("555-0123", "1"), ("+1 015 555 0123", "1"), ("1234567890123456", "1"),
]


def test_phones_are_valid_and_e164_exactly_as_libphonenumber_reads_them(spark):
    def library(raw: str, country: str) -> tuple[str | None, str | None]:
        try:
            number = phonenumbers.parse(raw, phonenumbers.region_code_for_country_code(int(country)))
        except phonenumbers.NumberParseException:
            return None, "invalid_phone"
        if not phonenumbers.is_valid_number(number):
            return None, "invalid_phone"
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None

    per_country = [
        raw_rows(spark, [(raw, "phone", raw, "seg_1") for raw, c in PHONES if c == country]).transform(normalize_identifiers, country)
        for country in sorted({c for _, c in PHONES})
    ]
    rows = functools.reduce(lambda left, right: left.unionByName(right), per_country).collect()
    got = {row.user_id: (row.id_normalized, row.reject_reason) for row in rows}
    assert got == {raw: library(raw, country) for raw, country in PHONES}


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("AECE52E7-03EE-455A-B3C4-E57283966239", "aece52e7-03ee-455a-b3c4-e57283966239"),
        (" aece52e703ee455ab3c4e57283966239 ", "aece52e7-03ee-455a-b3c4-e57283966239"),
        ("aece52e7-03ee-455a-b3c4-e57283966239\u0085", "aece52e7-03ee-455a-b3c4-e57283966239"),
    ],
)
def test_maid_is_lowercase_uuid_with_dashes(spark, raw, expected):
    assert normalized(spark, "maid", raw) == (expected, None)


def test_zero_maid_identifies_nobody(spark):
    assert normalized(spark, "maid", "00000000-0000-0000-0000-000000000000") == (None, "zero_maid")


def test_malformed_maid_is_rejected(spark):
    assert normalized(spark, "maid", "not-a-uuid") == (None, "invalid_maid")


def test_rows_missing_fields_get_the_first_failing_reason(spark):
    rows = [
        (None, "email", "a@example.com", "seg_1"),
        ("u1", "email", "a@example.com", " "),
        ("u1", None, "a@example.com", "seg_1"),
        ("u1", "fax", "123", "seg_1"),
        ("u1", " EMAIL ", None, "seg_1"),
        ("u1", "external_id", "x" * 300, "seg_1"),
    ]
    reasons = [r["reject_reason"] for r in raw_rows(spark, rows).transform(normalize_identifiers, "1").collect()]
    assert reasons == [
        "missing_user_id",
        "missing_segment_id",
        "missing_id_type",
        "unknown_id_type",
        "missing_id_value",
        "invalid_external_id",
    ]


def test_unparseable_record_is_rejected_as_malformed(spark):
    frame = raw_rows(spark, [("u1", "email", "a@example.com", "seg_1")]).withColumn("read_error", F.lit("bad,row"))
    assert frame.transform(normalize_identifiers, "1").first()["reject_reason"] == "malformed_record"


def test_a_replacement_character_in_any_column_is_invalid_encoding_not_an_id(spark):
    """Spark's CSV reader writes U+FFFD for bytes that are not UTF-8: 'ext\xe9' and 'ext\xe8' would be one id."""
    rows = [
        ("u\ufffd1", "email", "a@example.com", "seg_1"),
        ("u2", "external_id", "ext\ufffd", "seg_1"),
        ("u3", "email", "caf\ufffd@example.com", "seg_1"),
        ("u4", "email", "a@example.com", "seg_\ufffd"),
        ("u5", "e\ufffdmail", "a@example.com", "seg_1"),
        ("u6", "external_id", "ext-\u00e9", "seg_1"),  # decoded fine: a valid id
    ]
    result = [(r["reject_reason"], r["id_normalized"]) for r in raw_rows(spark, rows).transform(normalize_identifiers, "1").collect()]
    assert result == [("invalid_encoding", None)] * 5 + [(None, "ext-\u00e9")]


def test_user_id_longer_than_256_characters_is_rejected(spark):
    rows = [("u" * 256, "email", "a@example.com", "seg_1"), ("u" * 257, "email", "a@example.com", "seg_1"), ("  u1  ", "email", "a@example.com", "seg_1")]
    reasons = [r["reject_reason"] for r in raw_rows(spark, rows).transform(normalize_identifiers, "1").collect()]
    assert reasons == [None, "invalid_user_id", None]


@pytest.mark.parametrize("raw", ["a." * 500_000 + "a@example.com", "a@" + "b." * 500_000 + "com", "a" * 1_000_000 + "@example.com"])
def test_megabyte_email_is_rejected_before_the_regex_sees_it(spark, raw):
    """Java's regex engine recurses once per repetition of `(\\.[...]+)*`: on 'a.a.a...' of 1 MB
    the stack overflowed, which kills the executor (in local mode, the whole job)."""
    assert normalized(spark, "email", raw) == (None, "invalid_email")


def test_bad_default_country_code_is_refused(spark):
    with pytest.raises(ValueError, match="country calling code '\\+1'"):
        raw_rows(spark, []).transform(normalize_identifiers, "+1")


RULES = StructType(
    [
        StructField("id_type", StringType()),
        StructField("id_normalized", StringType()),
        StructField("hash_sha256", BooleanType()),
        StructField("phone_with_plus", BooleanType()),
        StructField("gmail_canonical", BooleanType()),
    ]
)


def test_match_key_follows_each_destination_rule(spark):
    rows = [
        ("email", "john.smith@example.com", True, True, False),
        ("email", "cloudy.san.francisco+shopping@gmail.com", True, True, True),
        ("email", "cloudy.san.francisco+shopping@gmail.com", True, True, False),
        ("email", "user.name+nyc@example.com", True, True, True),  # only gmail is canonicalized
        ("phone", "+14155550123", True, False, False),  # Meta: digits, no plus
        ("phone", "+14155550123", True, True, False),  # Google: E.164 with plus
        ("maid", "aece52e7-03ee-455a-b3c4-e57283966239", False, True, False),
    ]
    expected = [
        sha256("john.smith@example.com"),
        sha256("cloudysanfrancisco@gmail.com"),
        sha256("cloudy.san.francisco+shopping@gmail.com"),
        sha256("user.name+nyc@example.com"),
        sha256("14155550123"),
        sha256("+14155550123"),
        "aece52e7-03ee-455a-b3c4-e57283966239",
    ]
    keys = [r["match_key"] for r in spark.createDataFrame(rows, RULES).transform(with_match_key).collect()]
    assert keys == expected


def test_normalize_keeps_raw_value_and_states_its_schema(spark):
    frame = raw_rows(spark, [("u1 ", "Email", " A@Example.com", " seg_1 ")]).transform(normalize_identifiers, "1")
    expected = spark.createDataFrame(
        [("u1", "email", " A@Example.com", "seg_1", None, "day1.csv", "a@example.com", None)],
        "user_id string, id_type string, id_value string, segment_id string, updated_at timestamp, "
        "source_file string, id_normalized string, reject_reason string",
    )
    assert_df_equality(frame, expected, ignore_nullable=True)


def test_whitespace_is_the_regexes_set_over_every_code_point(spark):
    """Trimming and removing whitespace as a character set gives what the regular expression gave,
    for each of the 1,112,064 code points on both sides of a letter."""
    from audience_relay.transforms.identifiers import WHITESPACE, remove_whitespace, strip_whitespace

    code_points = spark.range(0, 0x110000).filter(~F.col("id").between(0xD800, 0xDFFF))
    # UTF-32 bytes of "x", the character, "a", the character, decoded; then "x" cut off (the decoder
    # would take a leading U+FEFF for a byte-order mark).
    utf32 = F.lpad(F.hex("id"), 8, "0")
    decoded = F.decode(F.unhex(F.concat(F.lit("00000078"), utf32, F.lit("00000061"), utf32)), "UTF-32BE")
    framed = code_points.select("id", F.substring(decoded, 2, 3).alias("value"))
    differing = framed.filter(
        (strip_whitespace("value") != F.regexp_replace("value", f"^{WHITESPACE}|{WHITESPACE}$", ""))
        | (remove_whitespace("value") != F.regexp_replace("value", WHITESPACE, ""))
    )
    assert framed.filter(F.length("value") != 3).count() == 0   # every code point became one character
    assert differing.select("id").limit(10).collect() == []
    assert framed.filter(strip_whitespace("value") == "a").count() == 31   # Python's 29 str.isspace() characters, U+200B and U+FEFF


def test_whitespace_is_what_pythons_strip_removes_and_the_zero_width_characters():
    """The destinations' SDKs trim with Python's str.strip(); U+200B and U+FEFF are invisible too."""
    from audience_relay.transforms.identifiers import WHITESPACE_CHARACTERS

    assert set(WHITESPACE_CHARACTERS) == {chr(c) for c in range(0x110000) if chr(c).isspace()} | {"\u200b", "\ufeff"}
