"""Read a prepared run's batches back from their Parquet files, for delivery.

A batch file holds about a hundred batches, sorted by batch number, and a delivery worker takes
its batches in that order. A read filtered on `batch_number` still decodes the whole row group
(the whole file, at Spark's 128 MB row groups), so reading each batch on its own would decode
every file once per batch. The reader keeps the last file it decoded and cuts batches from it:
each file is decoded once per worker.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

COLUMNS = ["batch_number", "id_type", "match_key"]


class BatchFileReader:
    def __init__(self) -> None:
        self._path: str | None = None
        self._table: pa.Table | None = None

    def members(self, path: str, batch_number: int) -> list[tuple[str, str]]:
        """The batch's (id_type, match_key) pairs, sorted; raises if the file cannot be read."""
        if path != self._path:
            self._path, self._table = None, None  # a failed read must not leave the old file behind
            self._table = pq.read_table(path, columns=COLUMNS)
            self._path = path
        batch = self._table.filter(pc.equal(self._table.column("batch_number"), batch_number))
        return sorted(zip(batch.column("id_type").to_pylist(), batch.column("match_key").to_pylist()))
