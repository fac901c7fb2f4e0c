"""One place that builds the SparkSession, so local runs, tests, EMR and Glue share settings."""
import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

# Settings chosen on purpose rather than left to defaults: AQE coalesces the many small shuffle
# partitions of small audiences; the broadcast threshold covers mapping, consent and bucket
# offset tables (tens of MB at most) but never a membership table.
TUNED_CONF = {
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    "spark.sql.autoBroadcastJoinThreshold": str(64 * 1024 * 1024),
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.compression.codec": "snappy",
    "spark.sql.sources.partitionOverwriteMode": "static",
    # Partition folder names are ids (`audience_id=00042`): never let Spark turn them into numbers.
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
    # Cached frames hold hashed ids, which do not compress: compressing the cache cost 11 s of
    # 38 s at 10M rows and saved 6% of its memory (bench/RESULTS.md).
    "spark.sql.inMemoryColumnarStorage.compressed": "false",
}
# Input splits per core: with one split per core, one late split leaves the other cores idle.
SPLITS_PER_CORE = 3
# Spark's log layout with emails and phone-like digit runs redacted: a task that fails on a
# record quotes it in Spark's own log lines (tests/reliability/test_no_raw_identifiers.py).
REDACTING_LOG_CONFIG = Path(__file__).with_name("log4j2-redacting.properties")
LOCAL_CONF = {
    "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={REDACTING_LOG_CONFIG.as_uri()}",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": os.environ.get("AUDIENCE_RELAY_DRIVER_MEMORY", "4g"),
}


def build_session(app_name: str, master: str | None = None, shuffle_partitions: int | None = None) -> SparkSession:
    """Return the active session (Glue, EMR, spark-submit) or a local one when none is running.

    spark-submit, EMR steps and Glue start the JVM first and hand Python its gateway
    (`PYSPARK_GATEWAY_PORT`); their master, resources and worker Python are theirs to set, so
    local settings apply only when Python starts Spark itself.
    """
    builder = SparkSession.builder.appName(app_name)
    for key, value in TUNED_CONF.items():
        builder = builder.config(key, value)
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        master = master or "local[*]"
        builder = builder.master(master)
        if master.startswith("local"):
            # Spark starts Python workers with PYSPARK_PYTHON, else `python3` from PATH: a console
            # script run without its venv on PATH (cron, systemd, CI) would get workers that
            # cannot import this package. Locally the workers are this interpreter's.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        for key, value in LOCAL_CONF.items():
            builder = builder.config(key, value)
    if shuffle_partitions:
        builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    session = builder.getOrCreate()
    if session.conf.get("spark.sql.files.minPartitionNum", None) is None:
        session.conf.set("spark.sql.files.minPartitionNum", str(task_slices(session)))
    session.sparkContext.setLogLevel("WARN")
    return session


def task_slices(spark: SparkSession) -> int:
    """A few partitions per core: for input splits, and for a frame kept in the cache.

    AQE merges small shuffle partitions, but not the output of a cached plan, which keeps all
    `spark.sql.shuffle.partitions` (200): every later aggregate over it then pays 200 tasks
    of a few thousand rows each.
    """
    return SPLITS_PER_CORE * spark.sparkContext.defaultParallelism
