"""A class data sharing (CDS) archive of the classes a Spark job loads, for the tests' job JVMs.

The suite starts dozens of short Spark JVMs (jobs run as processes: the demo, spark-submit,
crashes, locks). Each loaded and verified some 20,000 classes from the jars before doing any
work: 14 CPU-seconds for a session and two small queries, 8 with this archive (measured on this
machine, Java 17, C1 only). It is made once per machine and Spark build, by a job JVM that
writes it at exit (`-XX:ArchiveClassesAtExit`), and named by what it depends on: the Java build,
the jars, the JIT flags, the workload. A JVM given an archive that does not match runs without it.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# What a job does, in small: the classes of reading and writing Parquet and CSV, joins,
# aggregates and a Python function; the archive holds the classes loaded until exit.
WORKLOAD = """
import sys, tempfile
from pyspark.sql import SparkSession, functions as F
spark = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false").getOrCreate()
folder = tempfile.mkdtemp()
frame = spark.range(2000).select(F.col("id"), (F.col("id") % 7).cast("string").alias("k"), F.sha2(F.col("id").cast("string"), 256).alias("h"))
frame.write.mode("overwrite").partitionBy("k").parquet(folder + "/p")
frame.write.mode("overwrite").option("header", True).csv(folder + "/c")
read = spark.read.parquet(folder + "/p").join(spark.read.option("header", True).csv(folder + "/c").select("id", F.col("h").alias("hashed")), "id")
read.groupBy("k").agg(F.count("*"), F.countDistinct("hashed")).collect()
read.rdd.mapPartitions(lambda rows: [sum(1 for _ in rows)]).collect()
spark.stop()
"""
# The JVM's own notes about the archive (one it cannot map, say) would land in jobs' output.
QUIET = "-Xlog:cds=off,cds+dynamic=off"


def _key(java_options: str) -> str:
    import pyspark

    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    # The archive records the class path: the same jars elsewhere (another checkout's venv) do not match.
    jars = sorted(str(p) for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar"))
    return hashlib.sha256("\n".join([java, pyspark.__version__, java_options, WORKLOAD, *jars]).encode()).hexdigest()[:16]


def archive_path(java_options: str) -> Path:
    return Path(tempfile.gettempdir()) / f"audience-relay-spark-{_key(java_options)}.jsa"


def make_archive(java_options: str) -> tuple[Path | None, str]:
    """(the archive, what happened): made when missing; (None, why) when it cannot be."""
    path = archive_path(java_options)
    if path.is_file():
        return path, f"{path} (made before)"
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    environment = {**os.environ, "SPARK_SUBMIT_OPTS": f"{java_options} -XX:ArchiveClassesAtExit={partial} {QUIET}",
                   "PYSPARK_PYTHON": sys.executable}
    made = subprocess.run([sys.executable, "-c", WORKLOAD], capture_output=True, text=True, env=environment, timeout=300)
    if made.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        return None, f"none: making it failed ({made.returncode}): {made.stderr.strip().splitlines()[-1:] or ''}"
    os.replace(partial, path)
    return path, f"{path} (made now)"


def using(java_options: str, archive: Path) -> str:
    return f"{java_options} -XX:SharedArchiveFile={archive} {QUIET}"
