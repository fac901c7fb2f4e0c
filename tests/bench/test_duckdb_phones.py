"""The DuckDB peer reads phone numbers as libphonenumber does, settling most in SQL as ours does in
Spark (so the benchmark compares the same work), on the generated numbers of the 40 largest ad
markets and the named vectors that ours is held to."""
import duckdb
import phonenumbers
import pyarrow as pa
import pytest
from duckdb.typing import VARCHAR

from audience_relay.transforms.phone_regions import library_e164, region_for_country_code
from bench.peers.duckdb_phones import phone_ctes
from tests.unit.test_phone_numbers import AD_MARKETS, NAMED_VECTORS, generated_values


def read_with_duckdb(values: list[str | None], country: str) -> tuple[list[str | None], int]:
    """Each value's E.164 from the peer's SQL, and how many values it left to the library."""
    region, asked = region_for_country_code(country), []

    def library(batch: pa.Array) -> pa.Array:
        asked.extend(batch.to_pylist())
        return pa.array([library_e164(value, region) for value in batch.to_pylist()], pa.string())

    con = duckdb.connect()
    con.create_function("phone_e164_library", library, [VARCHAR], VARCHAR, type="arrow", null_handling="special")
    con.execute("CREATE TABLE numbers (position INTEGER, phone VARCHAR)")
    con.executemany("INSERT INTO numbers VALUES (?, ?)", list(enumerate(values)))
    ctes, last = phone_ctes("numbers", "phone", country)
    rows = con.execute(f"WITH {', '.join(ctes)} SELECT e164 FROM {last} ORDER BY position").fetchall()
    return [row[0] for row in rows], len(asked)


@pytest.mark.parametrize("region", AD_MARKETS)
def test_the_peer_reads_each_market_as_libphonenumber_and_settles_most_in_sql(region):
    values = generated_values(region, seed=AD_MARKETS.index(region))
    country = str(phonenumbers.country_code_for_region(region))
    read, left_to_library = read_with_duckdb(values, country)
    assert list(zip(values, read)) == [(value, library_e164(value, region_for_country_code(country))) for value in values]
    assert left_to_library < 0.4 * len(values)


def test_the_named_vectors_are_read_as_libphonenumber_reads_them():
    for country in sorted({country for _, country in NAMED_VECTORS}):
        values = [value for value, of in NAMED_VECTORS if of == country]
        assert read_with_duckdb(values, country)[0] == [library_e164(value, region_for_country_code(country)) for value in values], country
