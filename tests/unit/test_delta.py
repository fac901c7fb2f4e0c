from chispa import assert_df_equality

from transforms.delta import classify_members
from transforms.schemas import CLASSIFIED, DESTINATION_RULES, MEMBERS, SNAPSHOT


def rules(spark, rows):
    return spark.createDataFrame(rows, DESTINATION_RULES)


def test_mirror_mode_adds_new_removes_gone_keeps_unchanged(spark):
    current = spark.createDataFrame([("d", "a", "email", "k1", 1), ("d", "a", "email", "k2", 3)], MEMBERS)
    previous = spark.createDataFrame([("d", "a", "email", "k2"), ("d", "a", "email", "k3")], SNAPSHOT)
    expected = spark.createDataFrame(
        [("d", "a", "email", "k1", 1, "add"), ("d", "a", "email", "k2", 3, "unchanged"), ("d", "a", "email", "k3", 0, "remove")],
        CLASSIFIED,
    )
    got = classify_members(current, previous, rules(spark, [("d", "mirror", 10, 0)]))
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_upsert_mode_never_removes(spark):
    current = spark.createDataFrame([("d", "a", "email", "k1", 1)], MEMBERS)
    previous = spark.createDataFrame([("d", "a", "email", "k3")], SNAPSHOT)
    got = classify_members(current, previous, rules(spark, [("d", "upsert", 10, 0)]))
    assert sorted((r.match_key, r.status) for r in got.collect()) == [("k1", "add"), ("k3", "retained")]


def test_first_run_is_a_full_load(spark):
    current = spark.createDataFrame([("d", "a", "email", "k1", 1), ("d", "b", "maid", "k2", 1)], MEMBERS)
    previous = spark.createDataFrame([], SNAPSHOT)
    got = classify_members(current, previous, rules(spark, [("d", "mirror", 10, 0)]))
    assert sorted(r.status for r in got.collect()) == ["add", "add"]


def test_audience_below_minimum_size_sends_nothing_and_keeps_what_destination_has(spark):
    current = spark.createDataFrame(
        [("d", "small", "email", "k1", 1), ("d", "small", "email", "k2", 1), ("d", "big", "email", "k1", 1),
         ("d", "big", "email", "k2", 1), ("d", "big", "email", "k3", 1)],
        MEMBERS,
    )
    previous = spark.createDataFrame([("d", "small", "email", "k2"), ("d", "small", "email", "k9")], SNAPSHOT)
    got = classify_members(current, previous, rules(spark, [("d", "mirror", 10, 3)]))
    statuses = sorted((r.audience_id, r.match_key, r.status) for r in got.collect())
    assert statuses == [
        ("big", "k1", "add"), ("big", "k2", "add"), ("big", "k3", "add"),
        ("small", "k1", "held"), ("small", "k2", "unchanged"), ("small", "k9", "retained"),
    ]


def test_same_key_in_two_destinations_is_two_members(spark):
    current = spark.createDataFrame([("d1", "a", "email", "k1", 1), ("d2", "a", "email", "k1", 1)], MEMBERS)
    previous = spark.createDataFrame([("d1", "a", "email", "k1")], SNAPSHOT)
    got = classify_members(current, previous, rules(spark, [("d1", "mirror", 10, 0), ("d2", "mirror", 10, 0)]))
    assert sorted((r.destination_id, r.status) for r in got.collect()) == [("d1", "unchanged"), ("d2", "add")]
