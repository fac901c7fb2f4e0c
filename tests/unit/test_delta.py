from chispa import assert_df_equality

from audience_relay.transforms.delta import audience_sizes, classify_marked, classify_members, mark_membership
from audience_relay.transforms.schemas import CLASSIFIED, DESTINATION_RULES, MEMBERS, SNAPSHOT


def _members(spark, rows, withdrawn_rows=0):
    """MEMBERS rows of (destination, audience, id type, key, source rows[, ad_user_data, ad_personalization])."""
    return spark.createDataFrame([(*r[:4], *(r[5:] or (None, None)), r[4], withdrawn_rows) for r in rows], MEMBERS)


def _snapshot(spark, rows):
    """SNAPSHOT rows of (destination, audience, id type, key[, ad_user_data, ad_personalization])."""
    return spark.createDataFrame([(*r, None, None) if len(r) == 4 else r for r in rows], SNAPSHOT)


def rules(spark, rows):
    """Destination rules; rows of (id, sync mode, max batch, min size) have no removal guard."""
    return spark.createDataFrame([(*row, None, None) if len(row) == 4 else row for row in rows], DESTINATION_RULES)


def test_mirror_mode_adds_new_removes_gone_keeps_unchanged(spark):
    current = _members(spark, [("d", "a", "email", "k1", 1), ("d", "a", "email", "k2", 3)])
    previous = _snapshot(spark, [("d", "a", "email", "k2"), ("d", "a", "email", "k3")])
    expected = spark.createDataFrame(
        [(*key, None, None, rows, status) for *key, rows, status in
         [("d", "a", "email", "k1", 1, "add"), ("d", "a", "email", "k2", 3, "unchanged"), ("d", "a", "email", "k3", 0, "remove")]],
        CLASSIFIED,
    )
    got = classify_members(current, previous, rules(spark, [("d", "mirror", 10, 0)]))
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_upsert_mode_never_removes(spark):
    current = _members(spark, [("d", "a", "email", "k1", 1)])
    previous = _snapshot(spark, [("d", "a", "email", "k3")])
    got = classify_members(current, previous, rules(spark, [("d", "upsert", 10, 0)]))
    assert sorted((r.match_key, r.status) for r in got.collect()) == [("k1", "add"), ("k3", "retained")]


def test_first_run_is_a_full_load(spark):
    current = _members(spark, [("d", "a", "email", "k1", 1), ("d", "b", "maid", "k2", 1)])
    previous = _snapshot(spark, [])
    got = classify_members(current, previous, rules(spark, [("d", "mirror", 10, 0)]))
    assert sorted(r.status for r in got.collect()) == ["add", "add"]


def test_audience_below_minimum_size_sends_nothing_and_keeps_what_destination_has(spark):
    current = _members(
        spark,
        [("d", "small", "email", "k1", 1), ("d", "small", "email", "k2", 1), ("d", "big", "email", "k1", 1),
         ("d", "big", "email", "k2", 1), ("d", "big", "email", "k3", 1)],
    )
    previous = _snapshot(spark, [("d", "small", "email", "k2"), ("d", "small", "email", "k9")])
    got = classify_members(current, previous, rules(spark, [("d", "mirror", 10, 3)]))
    statuses = sorted((r.audience_id, r.match_key, r.status) for r in got.collect())
    assert statuses == [
        ("big", "k1", "add"), ("big", "k2", "add"), ("big", "k3", "add"),
        ("small", "k1", "held"), ("small", "k2", "unchanged"), ("small", "k9", "retained"),
    ]


def test_same_key_in_two_destinations_is_two_members(spark):
    current = _members(spark, [("d1", "a", "email", "k1", 1), ("d2", "a", "email", "k1", 1)])
    previous = _snapshot(spark, [("d1", "a", "email", "k1")])
    got = classify_members(current, previous, rules(spark, [("d1", "mirror", 10, 0), ("d2", "mirror", 10, 0)]))
    assert sorted((r.destination_id, r.status) for r in got.collect()) == [("d1", "unchanged"), ("d2", "add")]


def _audience(spark, previous_keys, current_keys, withdrawn_keys=()):
    """Members of one audience: current keys have a row each, withdrawn keys a row consent removed."""
    current = spark.createDataFrame([("d", "a", "email", k, None, None, int(k in current_keys), int(k in withdrawn_keys))
                                     for k in sorted(set(current_keys) | set(withdrawn_keys))], MEMBERS)
    previous = _snapshot(spark, [("d", "a", "email", k) for k in previous_keys])
    return mark_membership(current, previous)


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


def test_a_member_only_withdrawn_rows_name_is_neither_sent_nor_kept_but_its_rows_are_counted(spark):
    marked = _audience(spark, ["k1"], ["k2"], withdrawn_keys=["k1", "k3"])   # k3: never held, never current
    assert _statuses(marked, rules(spark, [("d", "mirror", 10, 0)])) == [("k1", "remove"), ("k2", "add")]
    assert [(r.audience_size, r.committed_size, r.leaving, r.withdrawn_rows) for r in audience_sizes(marked).collect()] == [(1, 1, 0, 2)]


def test_a_held_member_whose_consent_changed_is_sent_again_with_the_new_consent(spark):
    """Google keeps the consent a member was last ingested with: a change must reach it, in every mode."""
    current = _members(spark, [("d", "a", "email", "k1", 1, "denied", "granted"), ("d", "a", "email", "k2", 2, "granted", "granted"),
                               ("d", "a", "email", "k3", 1), ("d", "a", "email", "k5", 1, None, "denied")])
    previous = _snapshot(spark, [("d", "a", "email", "k1", "granted", "granted"), ("d", "a", "email", "k2", "granted", "granted"),
                                 ("d", "a", "email", "k3"), ("d", "a", "email", "k4", "denied", None),
                                 ("d", "a", "email", "k5", "granted", "denied")])
    for mode, gone in (("mirror", "remove"), ("upsert", "retained")):
        got = classify_members(current, previous, rules(spark, [("d", mode, 10, 0)]))
        assert sorted((r.match_key, r.status, r.ad_user_data, r.ad_personalization) for r in got.collect()) == [
            ("k1", "add", "denied", "granted"),        # ad user data withdrawn
            ("k2", "unchanged", "granted", "granted"),
            ("k3", "unchanged", None, None),           # unspecified then and now (or consent fixed in the config)
            ("k4", gone, "denied", None),              # a member that leaves keeps the consent it was held with
            ("k5", "add", None, "denied"),             # granted, now unspecified: sent again without it
        ]
