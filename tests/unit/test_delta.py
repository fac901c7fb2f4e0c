from chispa import assert_df_equality

from transforms.delta import audience_sizes, classify_marked, classify_members, mark_membership
from transforms.schemas import CLASSIFIED, DESTINATION_RULES, MEMBERS, SNAPSHOT


def rules(spark, rows):
    """Destination rules; rows of (id, sync mode, max batch, min size) have no removal guard."""
    return spark.createDataFrame([(*row, None, None) if len(row) == 4 else row for row in rows], DESTINATION_RULES)


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


def _audience(spark, previous_keys, current_keys, withdrawn_keys=()):
    current = spark.createDataFrame([("d", "a", "email", k, 1) for k in current_keys], MEMBERS)
    previous = spark.createDataFrame([("d", "a", "email", k) for k in previous_keys], SNAPSHOT)
    withdrawn = spark.createDataFrame([("d", "a", "email", k, 1) for k in withdrawn_keys], MEMBERS)
    return mark_membership(current, previous, withdrawn)


def _statuses(marked, destination_rules):
    got = classify_marked(marked, audience_sizes(marked), destination_rules)
    return sorted((r.match_key, r.status) for r in got.collect())


def test_removals_over_the_guards_share_of_the_committed_audience_are_held(spark):
    marked = _audience(spark, ["k1", "k2", "k3", "k4"], ["k1", "k5"])   # 3 of 4 committed members leave
    assert _statuses(marked, rules(spark, [("d", "mirror", 10, 0, 0.5, None)])) == [
        ("k1", "unchanged"), ("k2", "remove_held"), ("k3", "remove_held"), ("k4", "remove_held"), ("k5", "add")]
    assert [s for _, s in _statuses(marked, rules(spark, [("d", "mirror", 10, 0, 0.75, None)]))].count("remove") == 3  # at the limit: sent


def test_removals_over_the_guards_count_are_held_and_upsert_mode_holds_nothing(spark):
    marked = _audience(spark, ["k1", "k2", "k3"], [])
    assert {s for _, s in _statuses(marked, rules(spark, [("d", "mirror", 10, 0, None, 2)]))} == {"remove_held"}
    assert {s for _, s in _statuses(marked, rules(spark, [("d", "mirror", 10, 0, None, 3)]))} == {"remove"}
    assert {s for _, s in _statuses(marked, rules(spark, [("d", "upsert", 10, 0, 0.1, 0)]))} == {"retained"}


def test_consent_withdrawals_are_never_held_nor_counted_against_the_guard(spark):
    # k1 and k2 withdrew consent; k3 left the input: 1 of 3 committed members, under the guard.
    marked = _audience(spark, ["k1", "k2", "k3"], [], withdrawn_keys=["k1", "k2"])
    assert _statuses(marked, rules(spark, [("d", "mirror", 10, 0, 0.4, None)])) == [("k1", "remove"), ("k2", "remove"), ("k3", "remove")]
    # Over the guard (k3 alone is more than 0.2 of 3): k3 is held, the withdrawals still go.
    assert _statuses(marked, rules(spark, [("d", "mirror", 10, 0, 0.2, None)])) == [("k1", "remove"), ("k2", "remove"), ("k3", "remove_held")]
