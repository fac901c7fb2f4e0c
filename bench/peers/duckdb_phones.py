"""Phone numbers for the DuckDB peer: libphonenumber's reading, by the same steps as ours.

transforms/phone_numbers.py settles the numbers of the default region written with digits and
ordinary punctuation with Spark expressions generated from libphonenumber's metadata, and gives
only the rest to the library. A DuckDB user tuning the same job would do the same, so this
renders those steps as DuckDB SQL from the same metadata (RE2 has no lookaheads: a description's
possible lengths become a `length() IN (...)` test beside its pattern), and calls the library,
as a Python function, only on the rows the SQL does not settle. The benchmark checks the peer's
adds and removes equal to ours; tests/bench/test_duckdb_phones.py checks this against the
library on generated numbers.
"""
from __future__ import annotations

import re

import duckdb
import pyarrow as pa
from duckdb.typing import VARCHAR
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

from audience_relay.transforms.phone_numbers import (
    INVALID_LENGTH, MAX_INPUT_LENGTH, MAX_NSN_LENGTH, MIN_DIGITS_SETTLED, MIN_NSN_LENGTH, NUMBER_TYPES, POSSIBLE, POSSIBLE_LOCAL_ONLY,
    SPARK_SETTLED_VALUE, TOO_LONG, TOO_SHORT, _NationalPrefix)
from audience_relay.transforms.phone_regions import library_e164, region_for_country_code


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _matches(value: str, pattern: str | None) -> str:
    return f"regexp_full_match({value}, {_q(f'(?:{pattern})')})" if pattern else "false"


def _in(value: str, numbers) -> str:
    numbers = list(numbers)
    return f"{value} IN ({', '.join(map(str, numbers))})" if numbers else "false"


def _desc(value: str, desc) -> str | None:
    """libphonenumber's _is_number_matching_desc: a possible length, then the pattern."""
    if desc is None or not desc.national_number_pattern:
        return None
    lengths = sorted(set(desc.possible_length or ()))
    if lengths and lengths[0] < 1:
        return None
    pattern = _matches(value, desc.national_number_pattern)
    return f"({_in(f'length({value})', lengths)} AND {pattern})" if lengths else pattern


def _valid_for(value: str, metadata: PhoneMetadata) -> str:
    """libphonenumber's _number_type_helper(value, metadata) != UNKNOWN."""
    general = _desc(value, metadata.general_desc)
    descs = [metadata.fixed_line] + ([] if metadata.same_mobile_and_fixed_line_pattern else [metadata.mobile])
    types = [sql for sql in (_desc(value, d) for d in descs + [getattr(metadata, name) for name in NUMBER_TYPES]) if sql]
    return f"({general} AND ({' OR '.join(types)}))" if general and types else "false"


def _valid_for_country_code(nsn: str, country_code: int) -> str:
    regions = COUNTRY_CODE_TO_REGION_CODE[country_code]
    if len(regions) == 1:
        return _valid_for(nsn, PhoneMetadata.metadata_for_region(regions[0]))
    branches = []
    for region in regions:
        metadata = PhoneMetadata.metadata_for_region(region)
        if metadata is None:
            continue
        if metadata.leading_digits is not None:
            branches.append(f"WHEN regexp_matches({nsn}, {_q(f'^(?:{metadata.leading_digits})')}) THEN {_valid_for(nsn, metadata)}")
        else:
            branches.append(f"WHEN {_valid_for(nsn, metadata)} THEN true")
    return f"(CASE {' '.join(branches)} ELSE false END)"


def _length_result(value: str, metadata: PhoneMetadata) -> str:
    lengths = list(metadata.general_desc.possible_length)
    local_only = list(metadata.general_desc.possible_length_local_only or ())
    if lengths[0] == -1:
        return _q(INVALID_LENGTH)
    length = f"length({value})"
    return (f"(CASE WHEN {_in(length, local_only)} THEN {_q(POSSIBLE_LOCAL_ONLY)} WHEN {length} = {lengths[0]} THEN {_q(POSSIBLE)} "
            f"WHEN {length} < {lengths[0]} THEN {_q(TOO_SHORT)} WHEN {length} > {lengths[-1]} THEN {_q(TOO_LONG)} "
            f"WHEN {_in(length, lengths[1:])} THEN {_q(POSSIBLE)} ELSE {_q(INVALID_LENGTH)} END)")


def _unsettled(value: str, prefix: _NationalPrefix) -> str:
    pattern = prefix.unsettled_pattern
    return f"regexp_matches({value}, {_q(pattern)})" if pattern else "false"


def _strip(value: str, prefix: _NationalPrefix) -> str:
    """libphonenumber's _maybe_strip_national_prefix_carrier_code, as ours renders it for Spark."""
    if not prefix.pattern:
        return value
    anchored = _q(f"^(?:{prefix.pattern})")
    general = prefix.metadata.general_desc.national_number_pattern
    rest = f"substr({value}, length(regexp_extract({value}, {anchored}, 0)) + 1, {MAX_INPUT_LENGTH})"
    stripped = rest
    groups = re.compile(prefix.pattern).groups
    if prefix.metadata.national_prefix_transform_rule and groups:
        parts = [_q(part) if isinstance(part, str) else f"regexp_extract({value}, {anchored}, {part})" for part in prefix.transform_groups]
        stripped = f"(CASE WHEN regexp_extract({value}, {anchored}, {groups}) <> '' THEN concat({', '.join(parts)}, {rest}) ELSE {rest} END)"
    keeps_original = f"({_matches(value, general)} AND NOT {_matches(stripped, general)})"
    return f"(CASE WHEN length({value}) = 0 OR NOT regexp_matches({value}, {anchored}) OR {keeps_original} THEN {value} ELSE {stripped} END)"


def phone_ctes(source: str, value: str, default_country_code: str) -> tuple[list[str], str]:
    """CTEs over `source` adding `e164` for column `value` (`name AS (...)` each, in order), and the last one's name.

    The steps and names follow transforms/phone_numbers.py's with_spark_e164, one CTE per projection there."""
    metadata = PhoneMetadata.metadata_for_region(region_for_country_code(default_country_code))
    prefix = _NationalPrefix(metadata)
    code = str(metadata.country_code)
    general = metadata.general_desc.national_number_pattern
    with_plus = f"starts_with({value}, '+')"
    international = (f"NOT regexp_matches(p_digits, {_q(f'^(?:{metadata.international_prefix})')})" if metadata.international_prefix
                     else "true")
    after_code = f"substr(p_digits, {len(code) + 1}, {MAX_INPUT_LENGTH})"
    steps = [
        f"SELECT *, regexp_replace({value}, '[^0-9]', '', 'g') AS p_digits",
        f"SELECT *, regexp_full_match({value}, {_q(SPARK_SETTLED_VALUE.strip('^$'))}) AND length({value}) <= {MAX_INPUT_LENGTH} "
        f"AND length(p_digits) BETWEEN {MIN_DIGITS_SETTLED} AND {MAX_NSN_LENGTH} "
        f"AND (CASE WHEN {with_plus} THEN starts_with(p_digits, '{code}') ELSE {international} END) AS p_settled, "
        f"CASE WHEN NOT {with_plus} AND starts_with(p_digits, '{code}') THEN {_strip(after_code, prefix)} END AS p_code_off",
        f"SELECT *, CASE WHEN {with_plus} THEN {after_code} WHEN p_code_off IS NOT NULL AND ((NOT {_matches('p_digits', general)} "
        f"AND {_matches('p_code_off', general)}) OR {_length_result('p_digits', metadata)} = {_q(TOO_LONG)}) THEN p_code_off "
        f"ELSE p_digits END AS p_national",
        f"SELECT * REPLACE (p_settled AND NOT (p_code_off IS NOT NULL AND {_unsettled(after_code, prefix)}) "
        f"AND NOT {_unsettled('p_national', prefix)} AS p_settled), {_strip('p_national', prefix)} AS p_stripped",
        f"SELECT *, CASE WHEN length(p_national) < {MIN_NSN_LENGTH} THEN NULL WHEN {_length_result('p_stripped', metadata)} NOT IN "
        f"({_q(TOO_SHORT)}, {_q(POSSIBLE_LOCAL_ONLY)}, {_q(INVALID_LENGTH)}) THEN p_stripped ELSE p_national END AS p_nsn",
        f"SELECT * EXCLUDE (p_digits, p_code_off, p_national, p_stripped, p_nsn, p_settled), CASE WHEN p_settled THEN "
        f"(CASE WHEN length(p_nsn) BETWEEN {MIN_NSN_LENGTH} AND {MAX_NSN_LENGTH} AND {_valid_for_country_code('p_nsn', metadata.country_code)} "
        f"THEN '+{code}' || p_nsn END) WHEN {value} IS NOT NULL THEN phone_e164_library({value}) END AS e164",
    ]
    ctes, previous = [], source
    for number, step in enumerate(steps):
        name = f"phone_step_{number}"
        ctes.append(f"{name} AS MATERIALIZED ({step} FROM {previous})")
        previous = name
    return ctes, previous


def register_library(con: duckdb.DuckDBPyConnection, default_country_code: str) -> None:
    """`phone_e164_library(value)`: libphonenumber's E.164, or null when the number is not valid."""
    region = region_for_country_code(default_country_code)

    def phone_e164(values: pa.Array) -> pa.Array:
        return pa.array([library_e164(value, region) for value in values.to_pylist()], pa.string())

    con.create_function("phone_e164_library", phone_e164, [VARCHAR], VARCHAR, type="arrow", null_handling="special")
