"""Glue jobs and EMR steps as local processes that run the same job scripts.

A Glue job `--out s3://<work bucket>` becomes the local output directory (Glue's filesystem
is S3; local Spark has none). After each job the run's small control objects (the manifest
and the delivery summaries) are copied to the local S3 bucket, where the state machine's
`s3:getObject` reads them as it does in AWS. The batches stay on the local disk. An argument
naming objects in another bucket of the local S3 (an input folder, the config) is copied to
disk first and the job reads the copy.
"""
from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from audience_relay.orchestration.local.engine import JobFailed

_LOG_TAIL_LINES = 12
# Run and destination ids name local files here (logs, published control objects).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class ScriptCompute:
    """`LocalCompute` for `engine.install`: job name -> script, run with this Python."""

    def __init__(self, scripts: dict[str, Path], work_bucket: str, out: Path, environment: dict[str, str], s3_client,
                 slots: int = 2) -> None:
        self._scripts = scripts
        self._by_file = {path.name: path for path in scripts.values()}
        self._work = f"s3://{work_bucket}"
        self._bucket = work_bucket
        self._out = Path(out)
        self._environment = environment
        self._s3 = s3_client
        self._slots = threading.Semaphore(slots)   # concurrent Spark jobs on this machine
        self._numbers = itertools.count(1)
        self.runs: list[tuple[str, list[str]]] = []   # (job, argv) in start order

    def run_glue_job(self, job_name: str, arguments: dict[str, str]) -> None:
        script = self._scripts.get(job_name)
        if script is None:
            raise JobFailed(f"Glue job {job_name!r} has no local script (known: {sorted(self._scripts)})")
        self._run(job_name, script, [item for pair in arguments.items() for item in pair])

    def run_emr_step(self, cluster_id: str, args: list[str]) -> None:
        """`spark-submit [options] s3://.../prepare.py --k v ...`: the script and its arguments run locally."""
        position = next((i for i, arg in enumerate(args) if arg.endswith(".py")), None)
        if position is None or args[0] != "spark-submit":
            raise JobFailed(f"EMR step on {cluster_id} is not `spark-submit <script.py> ...`: {args[:3]}")
        name = args[position].rsplit("/", 1)[-1]
        if name not in self._by_file:
            raise JobFailed(f"EMR step script {args[position]} has no local script (known: {sorted(self._by_file)})")
        self._run(f"emr-{name.removesuffix('.py')}", self._by_file[name], args[position + 1:])

    def _run(self, label: str, script: Path, argv: list[str]) -> None:
        argv = [self._local(value) for value in argv]
        run_id = argv[argv.index("--run_id") + 1] if "--run_id" in argv else "no-run"
        destination = argv[argv.index("--destination") + 1] if "--destination" in argv else None
        for option, value in (("--run_id", run_id), ("--destination", destination)):
            if value is not None and not _NAME.fullmatch(value):
                raise JobFailed(f"{label}: {option} {value!r} cannot name a local file (it must match {_NAME.pattern})")
        logs = self._out / "local-jobs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{run_id}-{label}-{next(self._numbers)}.log"
        self.runs.append((label, argv))
        environment = {**os.environ, **self._environment, "PYSPARK_PYTHON": sys.executable}
        with self._slots, log.open("w") as sink:
            code = subprocess.run([sys.executable, str(script), *argv], stdout=sink, stderr=subprocess.STDOUT,
                                  env=environment, check=False).returncode
        self._publish(run_id, destination)
        if code != 0:
            tail = log.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
            raise JobFailed(f"{label} exited with {code} (log {log}): " + " | ".join(tail))

    def _local(self, value: str) -> str:
        if value == self._work or value.startswith(self._work + "/"):
            key = value[len(self._work):]
            # A key is a name in S3 but a path here: `..` or `.` would resolve outside the folder.
            if any(part in (".", "..") for part in key.split("/")):
                raise JobFailed(f"{value}: a work-bucket key with a '.' or '..' segment would leave {self._out}")
            return str(self._out) + key
        if value.startswith("s3://"):
            return self._stage_in(value)
        return value

    def _stage_in(self, uri: str) -> str:
        """The objects at `uri` (one key, or every key under it as a folder) copied to disk."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if any(part in (".", "..") for part in key.split("/")):
            raise JobFailed(f"{uri}: a key with a '.' or '..' segment would be copied outside {self._out / 's3'}")
        folder = key.rstrip("/") + "/"
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key.rstrip("/"))
            keys = [o["Key"] for page in pages for o in page.get("Contents", []) if o["Key"] == key or o["Key"].startswith(folder)]
        except self._s3.exceptions.NoSuchBucket:
            return uri   # not in the local S3: the job reports it
        copy = self._out / "s3" / bucket
        if (copy / key).is_dir():
            shutil.rmtree(copy / key)   # files of an earlier copy may since have gone from S3
        for found in keys:
            if found.endswith("/"):
                continue   # a "folder" marker object, no data
            if any(part in ("", ".", "..") for part in found.split("/")):
                raise JobFailed(f"s3://{bucket}/{found}: a key with an empty, '.' or '..' segment cannot be copied under {copy}")
            target = copy / found
            target.parent.mkdir(parents=True, exist_ok=True)
            self._s3.download_file(bucket, found, str(target))
        return str(copy / key) if keys else uri

    def _publish(self, run_id: str, destination: str | None) -> None:
        """Copy the job's control objects (JSON) to the work bucket, keyed as in AWS.

        A deliver job publishes only its destination's summary: another destination's job may
        be writing its own at the same moment.
        """
        run_dir = self._out / "runs" / run_id
        summaries = [run_dir / "delivery" / destination / "summary.json"] if destination else []
        for path in [run_dir / "manifest.json", *summaries]:
            if path.is_file():
                self._s3.put_object(Bucket=self._bucket, Key=path.relative_to(self._out).as_posix(), Body=path.read_bytes())
