"""libphonenumber itself (the `phonenumbers` package), without Spark: the region a default
country code reads numbers in, and the library's verdict on one value.

Config validation (which runs in Lambdas, without Spark) and the Spark path's slow lane
(transforms/phone_numbers.py) both use it; tests use it as the reference.
"""
from __future__ import annotations

import phonenumbers


def region_for_country_code(country_code: str) -> str:
    """The main region of a country calling code (39 → IT, 1 → US), as libphonenumber picks it.

    Raises ValueError for codes no region uses (non-geographic codes such as 800 included):
    national numbers cannot be read against them.
    """
    region = phonenumbers.region_code_for_country_code(int(country_code)) if country_code.isdigit() else None
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"country calling code {country_code!r} belongs to no region libphonenumber knows")
    return region


def library_e164(value: str | None, region: str) -> str | None:
    """E.164 of `value` read in `region` by libphonenumber, or None when it is not a valid number."""
    if value is None:
        return None
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) if phonenumbers.is_valid_number(number) else None
