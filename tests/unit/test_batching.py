from collections import Counter

import pytest
from pyspark.sql import functions as F

from audience_relay.transforms.batching import deliverable_changes, assign_batches, file_plan
from audience_relay.transforms.schemas import CLASSIFIED, DESTINATION_RULES


def classified(spark, n, audience="a", status="add", destination="d"):
    return spark.range(n).select(
        F.lit(destination).alias("destination_id"),
        F.lit(audience).alias("audience_id"),
        F.lit("email").alias("id_type"),
        F.sha2(F.col("id").cast("string"), 256).alias("match_key"),
        F.lit(None).cast("string").alias("ad_user_data"),
        F.lit(None).cast("string").alias("ad_personalization"),
        F.lit(1).cast("long").alias("source_rows"),
        F.lit(status).alias("status"),
    )


def rules(spark, max_batch):
    return spark.createDataFrame([("d", "mirror", max_batch, 0, None, None)], DESTINATION_RULES)


def batch_sizes(batched):
    return Counter((r.audience_id, r.op, r.batch_number) for r in batched.select("audience_id", "op", "batch_number").collect())


def test_batches_are_full_except_the_last_and_never_above_max(spark):
    sizes = batch_sizes(assign_batches(classified(spark, 2_345), rules(spark, 500), sub_buckets=7))
    assert sorted(sizes.values(), reverse=True) == [500, 500, 500, 500, 345]
    assert sorted(n for (_, _, n) in sizes) == [0, 1, 2, 3, 4]


def test_only_adds_and_removes_are_batched_per_op(spark):
    frame = classified(spark, 30, status="add").union(classified(spark, 20, status="remove")).union(
        classified(spark, 50, status="unchanged")
    ).union(classified(spark, 5, status="retained")).union(classified(spark, 5, status="held"))
    sizes = batch_sizes(assign_batches(frame, rules(spark, 25), sub_buckets=3))
    assert sizes == {("a", "add", 0): 25, ("a", "add", 1): 5, ("a", "remove", 0): 20}


def test_batches_do_not_depend_on_partitioning(spark):
    frame = classified(spark, 1_000)
    first = assign_batches(frame.repartition(1), rules(spark, 64), sub_buckets=16)
    second = assign_batches(frame.repartition(7), rules(spark, 64), sub_buckets=16)
    assert sorted(first.collect()) == sorted(second.collect())


def test_every_member_lands_in_exactly_one_batch(spark):
    frame = classified(spark, 777).union(classified(spark, 10, audience="b"))
    batched = assign_batches(frame, rules(spark, 100), sub_buckets=5)
    assert batched.count() == 787
    assert batched.select("audience_id", "match_key").distinct().count() == 787


def test_sub_buckets_must_be_positive(spark):
    with pytest.raises(ValueError, match="sub_buckets"):
        assign_batches(classified(spark, 1), rules(spark, 10), sub_buckets=0)


def test_small_groups_get_exact_batches_ranked_by_key(spark):
    from chispa import assert_df_equality

    from audience_relay.transforms.schemas import BATCHED

    consent = {"k1": ("granted", "denied"), "k9": ("denied", None)}   # carried to the batch, as prepared
    frame = spark.createDataFrame(
        [("d", "a", "email", k, *consent.get(k, (None, None)), 1, "add") for k in ("k3", "k1", "k2")]
        + [("d", "a", "email", "k9", *consent["k9"], 0, "remove")],
        CLASSIFIED,
    )
    expected = spark.createDataFrame(
        [("d", "a", "add", 0, "email", "k1", 1, "granted", "denied"), ("d", "a", "add", 0, "email", "k2", 1, None, None),
         ("d", "a", "add", 1, "email", "k3", 1, None, None), ("d", "a", "remove", 0, "email", "k9", 0, "denied", None)],
        BATCHED,
    )
    got = assign_batches(frame, rules(spark, 2), sub_buckets=1)
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_large_groups_split_into_files_of_whole_batches(spark):
    frame = classified(spark, 2_345)
    plan = file_plan(deliverable_changes(frame, 16), rules(spark, 300), file_rows=1_000).collect()
    files = {r.file_in_group: r.first_batch for r in plan}
    assert len(files) >= 3  # 2,345 ids in files of about 900 ids (three batches of 300)
    batched = assign_batches(frame, rules(spark, 300), sub_buckets=16, file_rows=1_000).withColumn("part", F.spark_partition_id())
    rows = batched.select("batch_number", "part").collect()
    for batch_number in {r.batch_number for r in rows}:
        assert len({r.part for r in rows if r.batch_number == batch_number}) == 1, f"batch {batch_number} spans partitions (files)"
    sizes = batch_sizes(batched)
    assert sorted(n for (_, _, n) in sizes) == list(range(len(sizes)))
    assert sorted(files.values()) == sorted(n for (_, _, n) in sizes if n in files.values())  # each file starts a batch
    assert max(sizes.values()) == 300
    assert sum(1 for size in sizes.values() if size < 300) <= len(files)  # only a file's last batch may be short
    assert sum(sizes.values()) == 2_345


def test_file_rows_must_be_positive(spark):
    with pytest.raises(ValueError, match="file_rows"):
        assign_batches(classified(spark, 1), rules(spark, 10), file_rows=0)
