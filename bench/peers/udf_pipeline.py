"""The prepare pipeline as typical Glue code writes it: Python UDFs normalize and hash.

Spark DataFrame joins for consent, mapping, dedupe and delta, but every identifier goes
through Python (`testing/reference.py`'s row functions) for normalization and SHA-256, which
is the pattern the benchmark compares against: each row crosses the JVM/Python boundary.
"""
from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from audience_relay.pipeline.config import DEFAULT_CONFIG, load_config
from audience_relay.testing import reference

NORMALIZED = StructType([StructField("id_type", StringType()), StructField("value", StringType()), StructField("reason", StringType())])


def run(spark: SparkSession, config, membership: str, consent: str, previous: str | None, out: str) -> None:
    country = config.defaults.default_country_code

    @F.udf(NORMALIZED)
    def normalize(user_id, id_type, id_value, segment_id):
        return reference.normalize({"user_id": user_id, "id_type": id_type, "id_value": id_value, "segment_id": segment_id}, country)

    @F.udf(StringType())
    def match_key(id_type, value, hash_sha256, phone_with_plus, gmail_canonical):
        rule = SimpleNamespace(hash_sha256=hash_sha256, phone_with_plus=phone_with_plus, gmail_canonical=gmail_canonical)
        return reference.match_key(id_type, value, rule)

    strip = F.udf(lambda v: v.strip() if v is not None else None, StringType())
    destinations = config.active_destinations
    mapping = spark.createDataFrame([(d.id, s, a) for d in destinations for a, segs in d.audiences.items() for s in segs],
                                    "destination_id string, segment_id string, audience_id string")
    rules = spark.createDataFrame(
        [(d.id, t, r.hash_sha256, r.phone_with_plus, r.gmail_canonical, d.guards.min_audience_size, d.sync_mode == "mirror", d.batch_size)
         for d in destinations for t in d.accepted_id_types for r in [d.identifier_rule(t)]],
        "destination_id string, id_type string, hash boolean, plus boolean, gmail boolean, min_size long, mirror boolean, batch_size long")

    raw = spark.read.parquet(membership)
    normalized = (raw.withColumn("n", normalize("user_id", "id_type", "id_value", "segment_id"))
                  .where(F.col("n.reason").isNull())
                  .select(strip("user_id").alias("user_id"), strip("segment_id").alias("segment_id"),
                          F.col("n.id_type").alias("id_type"), F.col("n.value").alias("value")))
    opt_outs = (spark.read.parquet(consent).select(strip("user_id").alias("user_id"), strip("scope").alias("scope"))
                .crossJoin(rules.select("destination_id").distinct())
                .where((F.col("scope") == "*") | (F.col("scope") == F.col("destination_id"))).select("user_id", "destination_id"))
    members = (normalized.join(rules, "id_type").join(mapping, ["destination_id", "segment_id"])
               .join(opt_outs, ["user_id", "destination_id"], "left_anti")
               .select("destination_id", "audience_id", "id_type",
                       match_key("id_type", "value", "hash", "plus", "gmail").alias("match_key"))
               .distinct())
    members.write.mode("overwrite").parquet(f"{out}/snapshot")
    members = spark.read.parquet(f"{out}/snapshot")
    prior = spark.read.parquet(previous) if previous else members.limit(0)
    keys = ["destination_id", "audience_id", "id_type", "match_key"]
    adds = members.join(prior, keys, "left_anti").withColumn("op", F.lit("add"))
    mirror = rules.where("mirror").select("destination_id").distinct()
    removes = prior.join(members, keys, "left_anti").join(mirror, "destination_id").withColumn("op", F.lit("remove"))
    sizes = members.groupBy("destination_id", "audience_id").count()
    audiences = members.select("destination_id", "audience_id").union(prior.select("destination_id", "audience_id")).distinct()
    guarded = (audiences.join(sizes, ["destination_id", "audience_id"], "left")
               .join(rules.select("destination_id", "min_size").distinct(), "destination_id")
               .where(F.coalesce("count", F.lit(0)) < F.col("min_size")).select("destination_id", "audience_id"))
    changes = adds.unionByName(removes).join(guarded, ["destination_id", "audience_id"], "left_anti")
    order = Window.partitionBy("destination_id", "audience_id", "op").orderBy("match_key")
    batched = (changes.join(rules.select("destination_id", "batch_size").distinct(), "destination_id")
               .withColumn("batch_number", F.floor((F.row_number().over(order) - 1) / F.col("batch_size"))).drop("batch_size"))
    batched.write.mode("overwrite").partitionBy("destination_id", "audience_id", "op").parquet(f"{out}/batches")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", required=True)
    parser.add_argument("--consent", required=True)
    parser.add_argument("--previous")
    parser.add_argument("--out", required=True)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    args = parser.parse_args(argv)
    spark = (SparkSession.builder.master(args.master).appName("bench-udf-peer")
             .config("spark.ui.enabled", "false").config("spark.driver.memory", "4g")  # as ours locally
             .getOrCreate())  # otherwise Spark's defaults, as typical Glue code runs
    spark.sparkContext.setLogLevel("ERROR")
    run(spark, load_config(args.config), args.input, args.consent, args.previous, args.out)
    spark.stop()
    print(json.dumps({"out": args.out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
