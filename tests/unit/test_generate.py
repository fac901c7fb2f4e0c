from collections import Counter

import pytest
from pyspark.sql import functions as F

from audience_relay.pipeline.generator import GeneratorError, GeneratorSpec, consent, generate, membership, spec_from_previous


def rows(spark, **spec):
    return membership(spark, GeneratorSpec(**spec))


def test_same_seed_gives_the_same_rows_whatever_the_partitioning(spark):
    first = rows(spark, records=2_000, seed=3).repartition(5).collect()
    second = rows(spark, records=2_000, seed=3).repartition(1).collect()
    assert sorted(first, key=str) == sorted(second, key=str)


def test_segment_popularity_has_a_head_and_a_long_tail(spark):
    counts = Counter(r.segment_id for r in rows(spark, records=20_000).select("segment_id").collect() if r.segment_id)
    ranked = [n for _, n in counts.most_common()]
    assert ranked[0] > 10 * ranked[len(ranked) // 2]  # the top segment dwarfs the median one
    assert len(counts) > 150  # and the tail is long


def test_data_is_dirty_in_the_ways_real_feeds_are(spark):
    frame = rows(spark, records=20_000)
    values = [r.id_value for r in frame.filter(F.col("id_type") == "email").select("id_value").collect()]
    assert any(v is None for v in values)
    assert any(v and v != v.strip() for v in values)
    assert any(v and v != v.lower() for v in values)
    phones = [r.id_value for r in frame.filter(F.col("id_type") == "phone").collect() if r.id_value]
    assert any("(" in p for p in phones) and any(p.startswith("+44") for p in phones)
    assert frame.filter(F.col("id_type") == "fax").count() > 0
    assert frame.select("user_id").distinct().count() < frame.count()  # users sit in several segments


def test_day_two_churns_users_and_segments_realistically(spark):
    day1 = rows(spark, records=20_000, day=1).select("user_id", "segment_id").dropna()
    day2 = rows(spark, records=20_000, day=2).select("user_id", "segment_id").dropna()
    gone = day1.subtract(day2).count() / day1.count()
    new = day2.subtract(day1).count() / day2.count()
    assert 0.02 < gone < 0.10 and 0.02 < new < 0.10


def test_consent_opt_outs_are_a_small_share_with_star_and_named_scopes(spark):
    spec = GeneratorSpec(records=50_000)
    scopes = Counter(r.scope for r in consent(spark, spec).collect())
    assert 0.002 < sum(scopes.values()) / spec.users < 0.01
    assert scopes["*"] > 0 and any(s in scopes for s in spec.destinations)


def test_previous_directory_gives_the_next_day_with_the_same_seed(spark, tmp_path):
    generate(spark, GeneratorSpec(records=500, seed=11, data_format="csv", compression="gzip"), tmp_path / "d1")
    spec = spec_from_previous(tmp_path / "d1")
    assert (spec.day, spec.seed, spec.records, spec.data_format) == (2, 11, 500, "csv")
    assert list((tmp_path / "d1" / "membership").glob("*.csv.gz"))


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(GeneratorError, match="--records"):
        GeneratorSpec(records=0)
    with pytest.raises(GeneratorError, match="--previous"):
        spec_from_previous(tmp_path)
