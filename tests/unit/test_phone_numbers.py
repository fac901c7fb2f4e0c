"""Phone numbers against libphonenumber (the `phonenumbers` package), the reference.

Every expected value is the library's own answer for the same value and default region. The
generated vectors cover the 40 largest ad markets: each number type's example number in the
library's formats, with and without trunk prefix, country code and international dialling
prefix, one digit changed, one digit short or long, and random digit strings.
"""
import functools
import random

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from audience_relay.transforms.phone_numbers import with_e164, with_spark_e164
from audience_relay.transforms.phone_regions import library_e164, region_for_country_code

AD_MARKETS = (
    "US CN GB JP DE FR CA KR AU BR IN IT ES RU MX ID NL TR SA CH SE PL AR BE TW ZA AE NO DK TH "
    "PH VN EG NG IL AT SG HK MY CO CL IE"
).split()
TYPES = (
    PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.TOLL_FREE, PhoneNumberType.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST, PhoneNumberType.VOIP, PhoneNumberType.PERSONAL_NUMBER, PhoneNumberType.PAGER,
    PhoneNumberType.UAN, PhoneNumberType.VOICEMAIL,
)


def generated_values(region: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    code = str(phonenumbers.country_code_for_region(region))
    dialling_prefix = phonenumbers.PhoneMetadata.metadata_for_region(region).preferred_international_prefix or "00"
    values = set()
    for number_type in TYPES:
        example = phonenumbers.example_number_for_type(region, number_type)
        if example is None:
            continue
        nsn = phonenumbers.national_significant_number(example)
        values.update(phonenumbers.format_number(example, f) for f in (PhoneNumberFormat.E164, PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.NATIONAL, PhoneNumberFormat.RFC3966))
        values.update([nsn, code + nsn, "0" + nsn, "8" + nsn, "1" + nsn, code + "0" + nsn, f"+{code}0{nsn}",
                       dialling_prefix + code + nsn, nsn[:-1], nsn + "5", f"+{code}{nsn[:-1]}", f"+{code}{nsn}1",
                       f"{nsn} x123", f"{nsn} ext. 7"])
        for _ in range(6):
            digits = list(nsn)
            digits[rng.randrange(len(digits))] = str(rng.randrange(10))
            changed = "".join(digits)
            values.update([changed, "0" + changed, f"+{code}{changed}", code + changed])
    for _ in range(40):
        digits = "".join(str(rng.randrange(10)) for _ in range(rng.randrange(3, 18)))
        values.update([digits, "+" + digits, f"({digits[:3]}) {digits[3:]}"])
    return sorted(values)


def test_spark_path_agrees_with_libphonenumber_where_it_settles(spark):
    """One Spark job for all markets (each market's rule is its own projection of a union)."""
    per_market = [
        spark.createDataFrame([(region, v) for v in generated_values(region, seed=index)], "region string, value string")
        .transform(with_spark_e164, "value", str(phonenumbers.country_code_for_region(region)))
        for index, region in enumerate(AD_MARKETS)
    ]
    rows = functools.reduce(lambda left, right: left.unionByName(right), per_market).collect()
    for region in AD_MARKETS:
        values = [row for row in rows if row.region == region]
        settled = [(row.value, row._phone_spark) for row in values if row._phone_settled]
        assert settled == [(value, library_e164(value, region)) for value, _ in settled], region
        # The path is worth having only if it settles most numbers written as national or E.164 numbers.
        assert len(settled) > 0.6 * len(values), region


NAMED_VECTORS = [
    ("06 1234 5678", "39"),  # Italy keeps the leading 0: +390612345678
    ("8 (495) 123-45-67", "7"),  # Russia's trunk prefix 8
    ("06 1 234 5678", "36"),  # Hungary's trunk prefix 06
    ("07911 123456", "1"),  # a UK mobile written nationally is not a US number
    ("1 415 555 0132", "44"),
    ("011 44 20 7946 0958", "1"),  # NANP's international dialling prefix
    ("810 44 20 7946 0958", "7"),
    ("00 44 20 7946 0958", "49"),
    ("tel:+1-415-555-0132", "1"),
    ("+1 415 555 0132 x123", "1"),
    ("(415) 555-0132 ext. 7", "1"),
    ("\uff0b\uff11 \uff14\uff11\uff15 \uff15\uff15\uff15 \uff10\uff11\uff13\uff12", "1"),  # full-width digits
    ("1-800-FLOWERS", "1"),
    ("+44 (0)20 7946 0958", "1"),
    ("0044 20 7946 0958", "1"),  # 00 is not an international prefix from the US
    ("415\t555 0132", "1"),
    ("12", "1"),
    (None, "1"),
]


def test_every_value_is_read_as_libphonenumber_reads_it(spark):
    frame = spark.createDataFrame(NAMED_VECTORS, "value string, country string")
    per_country = [
        frame.where(frame.country == country).transform(with_e164, "value", country, "e164")
        for country in sorted({country for _, country in NAMED_VECTORS})
    ]
    rows = functools.reduce(lambda left, right: left.unionByName(right), per_country).collect()
    got = {(row.value, row.country): row.e164 for row in rows}
    assert got == {(value, country): library_e164(value, region_for_country_code(country)) for value, country in NAMED_VECTORS}
    assert got[("06 1234 5678", "39")] == "+390612345678"  # the defect the issue names, as a spot check


def test_the_library_decides_every_value_the_spark_path_leaves(spark):
    values = generated_values("GB", seed=99) + ["+1 (415) 555-0132", "00 1 415 555 0132", "tel:+44-20-7946-0958;ext=1", "２０ ７９４６ ０９５８"]
    rows = spark.createDataFrame([(v,) for v in values], "value string").transform(with_e164, "value", "44", "e164").collect()
    assert [(row.value, row.e164) for row in rows] == [(v, library_e164(v, "GB")) for v in values]


@pytest.mark.parametrize("code", ["800", "999", "0"])
def test_a_default_country_code_without_a_region_is_refused(code):
    with pytest.raises(ValueError, match=code):
        region_for_country_code(code)
