"""The file format of file destinations (SFTP, S3): one gzip CSV per batch, byte-for-byte stable.

The same batch always produces the same bytes (sorted rows, gzip without a timestamp, a fixed
level), so a re-upload after a crash replaces a file with an identical one, and its name
carries the batch's checksum.
"""
from __future__ import annotations

import csv
import gzip
import io

from connectors.destination import Batch

# The ids are hex digests: compression only takes back the hex encoding's redundancy. Level 1
# does that 4.8x faster than level 9 for 3% more bytes (500,000 ids: 0.32 s vs 1.53 s,
# 19.8 MB vs 19.2 MB, bench/RESULTS.md).
GZIP_LEVEL = 1


def batch_file_name(batch: Batch) -> str:
    record = batch.record
    return f"{record.run_id}/{record.destination_id}/{record.audience_id}/{record.op}/batch-{record.batch_number:06d}-{record.checksum[:16]}.csv.gz"


def batch_file_bytes(batch: Batch) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["id_type", "id"])
    writer.writerows(batch.members)
    return gzip.compress(text.getvalue().encode("utf-8"), compresslevel=GZIP_LEVEL, mtime=0)
