"""Small-object I/O (manifests, snapshot pointers) on local paths and `s3://` URIs.

Spark writes the big data; this module only reads and writes the JSON that says what the big
data is. Local writes are atomic (temporary file, then rename); an S3 PUT is atomic already.
Pointers that several jobs may move are written with a compare-and-set (`write_text_if`): an
S3 conditional PUT (`If-Match` / `If-None-Match`), or an exclusive lock around the compare and
the rename on a local path.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

from audience_relay.connectors.aws import s3


def is_s3(uri: str) -> bool:
    return uri.startswith(("s3://", "s3a://"))


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def _bucket_key(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def read_text(uri: str) -> str | None:
    """The object's text, or None when it does not exist."""
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        try:
            return s3.client().get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
        except s3.client().exceptions.NoSuchKey:
            return None
    path = Path(uri)
    return path.read_text(encoding="utf-8") if path.exists() else None


def write_text(uri: str, text: str) -> None:
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        s3.client().put_object(Bucket=bucket, Key=key, Body=text.encode("utf-8"))
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)


class Conflict(Exception):
    """A conditional write found the object changed (or created) since it was read."""


def _local_version(text: str | None) -> str | None:
    return hashlib.sha256(text.encode("utf-8")).hexdigest() if text is not None else None


def read_versioned(uri: str) -> tuple[str | None, str | None]:
    """The object's text and a version to hand to `write_text_if` (both None when absent)."""
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        try:
            answer = s3.client().get_object(Bucket=bucket, Key=key)
        except s3.client().exceptions.NoSuchKey:
            return None, None
        return answer["Body"].read().decode("utf-8"), answer["ETag"]
    text = read_text(uri)
    return text, _local_version(text)


def write_text_if(uri: str, text: str, version: str | None) -> None:
    """Write only while the object is still at `version` (None: only while it does not exist);
    `Conflict` otherwise, and nothing written."""
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        condition = {"IfMatch": version} if version is not None else {"IfNoneMatch": "*"}
        client = s3.client()
        try:
            client.put_object(Bucket=bucket, Key=key, Body=text.encode("utf-8"), **condition)
        except client.exceptions.ClientError as error:
            # 412: the condition failed; 409: a concurrent conditional write to the key won.
            if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise Conflict(f"{uri}: changed since it was read") from None
            raise
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held across the compare and the rename
        if _local_version(read_text(uri)) != version:
            raise Conflict(f"{uri}: changed since it was read")
        write_text(uri, text)


def is_folder(uri: str) -> bool:
    """A local directory, or an `s3://` URI that is not one object (a prefix, with or without `/`)."""
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        if not key or key.endswith("/"):
            return True
        client = s3.client()
        try:
            client.head_object(Bucket=bucket, Key=key)
            return False
        except client.exceptions.ClientError:
            return True
    return Path(uri).is_dir()


def exists(uri: str) -> bool:
    """An object at exactly this key, or a "folder" with objects under `key/`."""
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        client = s3.client()
        try:
            client.head_object(Bucket=bucket, Key=key)
            return True
        except client.exceptions.ClientError:
            listing = client.list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=1)
            return listing.get("KeyCount", 0) > 0
    return Path(uri).exists()


def spark_reads_s3(spark) -> bool:
    """Whether this Spark has a filesystem for `s3://` (Glue and EMR do; pip's pyspark does not)."""
    jvm = spark.sparkContext._jvm
    try:
        jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass("s3", spark.sparkContext._jsc.hadoopConfiguration())
        return True
    except Exception:  # noqa: BLE001 - py4j raises UnsupportedFileSystemException as Py4JJavaError
        return False


def download_prefix(uri: str, target: str | Path) -> str:
    """Copy every object under an `s3://` prefix to a local directory, keeping relative paths.

    For local Spark without an S3 filesystem: the job then reads the local copy.
    """
    bucket, key = _bucket_key(uri)
    folder = key.rstrip("/") + "/" if key.strip("/") else ""
    target = Path(target)
    client = s3.client()
    copied = 0
    for item in s3.objects(bucket, key.rstrip("/"), client):
        if item["Key"].endswith("/"):
            continue  # a console "folder" marker, not data
        if item["Key"] == key:  # the URI names one object
            relative = Path(key).name
        elif item["Key"].startswith(folder):  # an object inside the URI's "folder", not a sibling prefix
            relative = item["Key"][len(folder):]
        else:
            continue
        # S3 keys are names, not paths: `a//b`, `./a` and `../a` are ordinary keys that a
        # local path would resolve elsewhere (`target / "/etc/x"` is `/etc/x`).
        if any(part in ("", ".", "..") for part in relative.split("/")) or "\\" in relative:
            raise ValueError(f"s3://{bucket}/{item['Key']}: object key escapes its prefix "
                             f"(an empty, '.' or '..' segment after {uri}); it cannot be copied to a local folder")
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, item["Key"], str(destination))
        copied += 1
    if not copied:
        raise FileNotFoundError(f"{uri}: no objects under this prefix")
    return str(target)


def read_bytes(uri: str) -> bytes | None:
    """The object's bytes (a small file: a report's Parquet part, not a batch folder), or None."""
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        try:
            return s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.client().exceptions.NoSuchKey:
            return None
    path = Path(uri)
    return path.read_bytes() if path.is_file() else None


def list_files(uri: str) -> list[str]:
    """Every file under a folder (at any depth), as URIs in the same form, sorted; [] when none."""
    return sorted(join(uri, relative) for relative in file_sizes(uri))


def file_sizes(uri: str) -> dict[str, int]:
    """Every file under a folder (at any depth) by its path relative to it, with its size in
    bytes; {} when none. One listing (S3: a page per 1,000 files), no request per file."""
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        prefix = key.rstrip("/") + "/"
        return {item["Key"][len(prefix):]: item["Size"] for item in s3.objects(bucket, prefix) if not item["Key"].endswith("/")}
    root = Path(uri)
    return {"/".join(p.relative_to(root).parts): p.stat().st_size for p in root.rglob("*") if p.is_file()} if root.is_dir() else {}


COPY_THREADS = 16   # server-side copies in flight: a snapshot is hundreds of ~70 MB files


def copy_folder(source: str, target: str) -> list[tuple[str, int]]:
    """Copy every file under `source` to the same relative path under `target` (S3: server-side,
    in parallel; local: file by file). Returns (relative path, bytes) per file, sorted; [] when
    `source` holds none."""
    files = list_files(source)
    relative = [uri[len(source.rstrip("/")) + 1:] for uri in files]
    if is_s3(source):
        client = s3.client()

        def copy(name: str) -> int:
            source_bucket, source_key = _bucket_key(join(source, name))
            bucket, key = _bucket_key(join(target, name))
            client.copy({"Bucket": source_bucket, "Key": source_key}, bucket, key)   # multipart above 8 MiB: any size
            return client.head_object(Bucket=bucket, Key=key)["ContentLength"]

        with ThreadPoolExecutor(COPY_THREADS) as pool:
            sizes = list(pool.map(copy, relative))
        return sorted(zip(relative, sizes))
    copied = []
    for name in relative:
        destination = Path(join(target, name))
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(join(source, name), destination)
        copied.append((name, destination.stat().st_size))
    return sorted(copied)


def delete_folder(uri: str) -> None:
    """Delete every file under the folder (nothing when there is none)."""
    if is_s3(uri):
        bucket, _ = _bucket_key(uri)
        keys = [_bucket_key(f)[1] for f in list_files(uri)]
        for start in range(0, len(keys), 1000):   # DeleteObjects takes 1,000 keys per call
            answer = s3.client().delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})
            refused = answer.get("Errors") or []   # per key, in a 200 answer
            if refused:
                raise PermissionError(f"s3://{bucket}/{refused[0]['Key']}: {refused[0]['Code']} ({refused[0].get('Message', '')}); "
                                      f"{len(refused)} of {len(keys[start:start + 1000])} objects not deleted")
        return
    shutil.rmtree(uri, ignore_errors=True)
