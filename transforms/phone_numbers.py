"""Phone numbers as libphonenumber parses and validates them, at Spark's speed where that is exact.

The reference is Google's libphonenumber (the `phonenumbers` package): `parse(value, region)`,
then `is_valid_number`, then E.164. Its metadata holds, per region, the international dialling
prefix, the national (trunk) prefix and how to strip it, the possible lengths and the patterns
of every number type, as regular expressions written for Java's engine, the one Spark runs.

For the default region, the steps the library takes on a value written with ASCII digits, an
optional leading `+` and ordinary punctuation (`( ) - . /` and spaces) are rendered here as Spark
expressions from that metadata: the country code (written with `+`, or without it as the library
decides), the national prefix strip (with its transform rule), the length test that decides
whether the stripped form is kept, and validity against each number type of the country code's
regions, in the library's order. That covers the numbers a data lake mostly holds.

Every other value (extensions, `tel:` URIs, letters, full-width digits, another country's code,
an international dialling prefix such as `00`/`011`/`810`, fewer than 3 or more than 17 digits)
is parsed by the library itself, in Arrow batches, so the result is the library's in every case.
The fast path's agreement with the library is tested on generated numbers of the largest ad
markets (tests/unit/test_phone_numbers.py).
"""
from __future__ import annotations

import re
from re import _parser as sre_parse  # the stdlib regex parser (sre_parse before 3.11)
from dataclasses import dataclass

import pandas as pd
import phonenumbers
from phonenumbers import PhoneMetadata
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf

from audience_relay.transforms.phone_regions import library_e164, region_for_country_code

# The characters a value may hold for the Spark path to settle it; anything else goes to the library.
SPARK_SETTLED_VALUE = r"^\+?[0-9()./ -]*$"
MIN_DIGITS_SETTLED = 3  # fewer: the library's own viability rule (exactly 2 digits, or 3+) decides
MAX_NSN_LENGTH = 17  # libphonenumber's _MAX_LENGTH_FOR_NSN
MIN_NSN_LENGTH = 2  # libphonenumber's _MIN_LENGTH_FOR_NSN
MAX_INPUT_LENGTH = 250  # libphonenumber's _MAX_INPUT_STRING_LENGTH
# Number types in the order libphonenumber's _number_type_helper tests them (fixed line and mobile
# last); a number is valid when its national number matches the general description and any type.
NUMBER_TYPES = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail")

# Results of libphonenumber's _test_number_length.
POSSIBLE, POSSIBLE_LOCAL_ONLY, TOO_SHORT, TOO_LONG, INVALID_LENGTH = "possible", "local_only", "too_short", "too_long", "invalid_length"


def _library_e164_udf(region: str):
    """The library itself over an Arrow batch, for the values the Spark path does not settle
    (null for the others, which cost only their place in the batch)."""

    @pandas_udf("string")
    def parse_with_library(values: pd.Series) -> pd.Series:
        return values.map(lambda value: library_e164(value, region), na_action="ignore")

    return parse_with_library


def _whole(pattern: str) -> str:
    return f"^(?:{pattern})$"


def _matches_pattern(value: Column, pattern: str | None) -> Column:
    """libphonenumber's _match_national_number: a full match; no pattern matches nothing."""
    return value.rlike(_whole(pattern)) if pattern else F.lit(False)


def _desc_regex(desc) -> str | None:
    """libphonenumber's _is_number_matching_desc as one regular expression over the whole value:
    a possible length (a lookahead), then the pattern. None: the description matches nothing."""
    if desc is None or not desc.national_number_pattern:
        return None
    lengths = sorted(set(desc.possible_length or ()))
    if lengths and lengths[0] < 1:   # (-1,): no number has this type
        return None
    length = f"(?=(?:{'|'.join(f'[0-9]{{{n}}}' for n in lengths)})$)" if lengths else ""
    return f"{length}(?:{desc.national_number_pattern})$"


def _valid_regex(metadata: PhoneMetadata) -> str | None:
    """libphonenumber's _number_type_helper(value, metadata) != UNKNOWN as one regular expression:
    the general description, then any number type's. One regex per region keeps the generated
    code small enough for the JIT; a chain of an `rlike` per type (188 for NANP) did not, and ran
    slower than the library itself."""
    general = _desc_regex(metadata.general_desc)
    descs = [metadata.fixed_line] + ([] if metadata.same_mobile_and_fixed_line_pattern else [metadata.mobile])
    descs += [getattr(metadata, name) for name in NUMBER_TYPES]
    types = [regex for regex in map(_desc_regex, descs) if regex]
    if general is None or not types:
        return None
    return f"^(?={general})(?:{'|'.join(types)})"


def _is_valid_for(value: Column, metadata: PhoneMetadata) -> Column:
    """libphonenumber's _number_type_helper(value, metadata) != UNKNOWN."""
    regex = _valid_regex(metadata)
    return value.rlike(regex) if regex else F.lit(False)


def _length_result(value: Column, metadata: PhoneMetadata) -> Column:
    """libphonenumber's _test_number_length against the general description."""
    lengths = list(metadata.general_desc.possible_length)
    local_only = list(metadata.general_desc.possible_length_local_only or ())
    length = F.length(value)
    if lengths[0] == -1:
        return F.lit(INVALID_LENGTH)
    return (
        F.when(length.isin(*local_only), POSSIBLE_LOCAL_ONLY)
        .when(length == lengths[0], POSSIBLE)
        .when(length < lengths[0], TOO_SHORT)
        .when(length > lengths[-1], TOO_LONG)
        .when(length.isin(*lengths[1:]), POSSIBLE)
        .otherwise(INVALID_LENGTH)
    )


def _group_can_be_empty(pattern: str, group: int) -> bool:
    """Whether capturing `group` of `pattern` can match the empty string: Spark's
    regexp_extract answers "" both for an empty match and for a group that took no part."""

    def widths(parsed) -> list[int]:
        found = []
        for op, arg in parsed:
            if op is sre_parse.SUBPATTERN:
                if arg[0] == group:
                    found.append(arg[-1].getwidth()[0])
                found += widths(arg[-1])
            elif op in (sre_parse.BRANCH,):
                for branch in arg[1]:
                    found += widths(branch)
            elif op in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT):
                found += widths(arg[2])
        return found

    return any(width == 0 for width in widths(sre_parse.parse(pattern)))


@dataclass(frozen=True)
class _NationalPrefix:
    """libphonenumber's _maybe_strip_national_prefix_carrier_code for one region, as columns."""

    metadata: PhoneMetadata

    @property
    def pattern(self) -> str | None:
        return self.metadata.national_prefix_for_parsing or None

    @property
    def transform_groups(self) -> list[str | int]:
        """The transform rule as literal text and group numbers (`9\\1` → ["9", 1])."""
        parts: list[str | int] = []
        for literal, group in re.findall(r"([^\\]*)(?:\\(\d))?", self.metadata.national_prefix_transform_rule or ""):
            parts += [p for p in (literal, int(group) if group else None) if p not in ("", None)]
        return parts

    @property
    def unsettled_pattern(self) -> str | None:
        """What a value starts with when its strip cannot be decided by expressions (a transform
        rule whose last group may match empty); None when every strip can (the regions seen so far)."""
        if not self.pattern or not self.metadata.national_prefix_transform_rule:
            return None
        last_group = re.compile(self.pattern).groups
        if last_group and not _group_can_be_empty(self.pattern, last_group):
            return None
        return f"^(?:{self.pattern})"

    def unsettled(self, value: Column) -> Column:
        """Rows whose strip the Spark path cannot decide exactly."""
        pattern = self.unsettled_pattern
        return value.rlike(pattern) if pattern else F.lit(False)

    def strip(self, value: Column) -> Column:
        if not self.pattern:
            return value
        anchored = f"^(?:{self.pattern})"
        general = self.metadata.general_desc.national_number_pattern
        matched = F.regexp_extract(value, anchored, 0)
        rest = value.substr(F.length(matched) + 1, F.lit(MAX_INPUT_LENGTH))
        stripped = rest
        groups = re.compile(self.pattern).groups
        if self.metadata.national_prefix_transform_rule and groups:
            transformed = F.concat(*[
                F.lit(part) if isinstance(part, str) else F.regexp_extract(value, anchored, part)
                for part in self.transform_groups
            ], rest)
            stripped = F.when(F.regexp_extract(value, anchored, groups) != "", transformed).otherwise(rest)
        keeps_original = _matches_pattern(value, general) & ~_matches_pattern(stripped, general)
        return F.when((F.length(value) == 0) | ~value.rlike(anchored) | keeps_original, value).otherwise(stripped)


def with_e164(df: DataFrame, value: str, default_country_code: str, output: str) -> DataFrame:
    """Add `output`: the E.164 form (`+` and digits) of column `value` read as libphonenumber reads
    it with the default country code's main region, or null when the library finds no valid number
    (and for null values)."""
    region = region_for_country_code(default_country_code)
    for_library = F.when(~F.col("_phone_settled"), F.col(value))
    return (
        df.transform(with_spark_e164, value, default_country_code)
        .withColumn("_phone_library", _library_e164_udf(region)(for_library))
        .withColumn(output, F.when(F.col("_phone_settled"), F.col("_phone_spark")).otherwise(F.col("_phone_library")))
        .drop("_phone_settled", "_phone_spark", "_phone_library")
    )


def with_spark_e164(df: DataFrame, value: str, default_country_code: str) -> DataFrame:
    """The Spark path alone: `_phone_settled` (whether it decides the row exactly) and `_phone_spark`
    (its E.164, null when invalid), through `_phone_*` working columns that it drops again."""
    region = region_for_country_code(default_country_code)
    metadata = PhoneMetadata.metadata_for_region(region)
    national_prefix = _NationalPrefix(metadata)
    code = str(metadata.country_code)
    general = metadata.general_desc.national_number_pattern

    digits = F.col("_phone_digits")
    with_plus = F.col(value).startswith("+")
    settled_shape = (
        F.col(value).rlike(SPARK_SETTLED_VALUE)
        & (F.length(value) <= MAX_INPUT_LENGTH)
        & (F.length(digits) >= MIN_DIGITS_SETTLED)
        & (F.length(digits) <= MAX_NSN_LENGTH)
    )
    international_prefix = metadata.international_prefix
    # With `+`: the rest is this country's only if it starts with its code (calling codes are prefix-free).
    # Without: an international dialling prefix means another country may follow: the library decides.
    own_country = F.when(with_plus, digits.startswith(code)).otherwise(
        ~digits.rlike(f"^(?:{international_prefix})") if international_prefix else F.lit(True)
    )
    after_code = digits.substr(len(code) + 1, MAX_INPUT_LENGTH)
    steps = df.withColumn("_phone_digits", F.regexp_replace(value, "[^0-9]", "")).withColumn(
        "_phone_settled", settled_shape & own_country
    )
    # Written without `+` but starting with the country code: the library keeps the code off when the
    # number was not valid with it and is without it, or was too long with it.
    steps = steps.withColumn("_phone_code_off", F.when(~with_plus & digits.startswith(code), national_prefix.strip(after_code)))
    code_off = F.col("_phone_code_off")
    code_is_written = (
        (~_matches_pattern(digits, general) & _matches_pattern(code_off, general))
        | (_length_result(digits, metadata) == TOO_LONG)
    )
    steps = steps.withColumn(
        "_phone_national",
        F.when(with_plus, after_code).when(code_off.isNotNull() & code_is_written, code_off).otherwise(digits),
    ).withColumn(
        "_phone_settled",
        F.col("_phone_settled")
        & ~(code_off.isNotNull() & national_prefix.unsettled(after_code))
        & ~national_prefix.unsettled(F.col("_phone_national")),
    )
    national = F.col("_phone_national")
    steps = steps.withColumn("_phone_stripped", national_prefix.strip(national))
    stripped = F.col("_phone_stripped")
    keeps_strip = ~_length_result(stripped, metadata).isin(TOO_SHORT, POSSIBLE_LOCAL_ONLY, INVALID_LENGTH)
    steps = steps.withColumn(
        "_phone_nsn", F.when(F.length(national) < MIN_NSN_LENGTH, None).when(keeps_strip, stripped).otherwise(national)
    )
    nsn = F.col("_phone_nsn")
    in_range = (F.length(nsn) >= MIN_NSN_LENGTH) & (F.length(nsn) <= MAX_NSN_LENGTH)
    steps = steps.withColumn(
        "_phone_spark", F.when(in_range & _is_valid_for_country_code(nsn, metadata.country_code), F.concat(F.lit("+" + code), nsn))
    )
    return steps.drop("_phone_digits", "_phone_code_off", "_phone_national", "_phone_stripped", "_phone_nsn")


def _is_valid_for_country_code(nsn: Column, country_code: int) -> Column:
    """libphonenumber's is_valid_number: the region is the first of the code's regions whose
    leading digits start the number, or (for a region without them) which the number is valid in;
    the number must then be valid in that region."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[country_code]
    if len(regions) == 1:
        return _is_valid_for(nsn, PhoneMetadata.metadata_for_region(regions[0]))
    chain = None
    for region in regions:
        metadata = PhoneMetadata.metadata_for_region(region)
        if metadata is None:
            continue
        if metadata.leading_digits is not None:
            condition, valid = nsn.rlike(f"^(?:{metadata.leading_digits})"), _is_valid_for(nsn, metadata)
        else:
            condition, valid = _is_valid_for(nsn, metadata), F.lit(True)
        chain = F.when(condition, valid) if chain is None else chain.when(condition, valid)
    return chain.otherwise(False)
