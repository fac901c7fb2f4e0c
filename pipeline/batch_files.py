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

from audience_relay.transforms.schemas import CONSENT_SIGNALS

COLUMNS = ["batch_number", "id_type", "match_key"]


class BatchFileReader:
    def __init__(self) -> None:
        self._path: str | None = None
        self._table: pa.Table | None = None

    def _batch(self, path: str, batch_number: int) -> pa.Table:
        if path != self._path:
            self._path, self._table = None, None  # a failed read must not leave the old file behind
            # Files prepared before members carried consent signals have none: read as unspecified.
            signals = [s for s in CONSENT_SIGNALS if s in pq.read_schema(path).names]
            self._table = pq.read_table(path, columns=COLUMNS + signals)
            self._path = path
        return self._table.filter(pc.equal(self._table.column("batch_number"), batch_number))

    def members(self, path: str, batch_number: int) -> list[tuple[str, str]]:
        """The batch's (id_type, match_key) pairs, sorted; raises if the file cannot be read."""
        return self.members_and_consent(path, batch_number)[0]

    def members_and_consent(self, path: str, batch_number: int) -> tuple[list[tuple[str, str]], dict[tuple[str, str], tuple[str | None, str | None]]]:
        """The batch's (id_type, match_key) pairs, sorted, and those that carry consent signals ->
        (ad_user_data, ad_personalization), from one cut of the file."""
        batch = self._batch(path, batch_number)
        members = list(zip(batch.column("id_type").to_pylist(), batch.column("match_key").to_pylist()))
        signals = [batch.column(s).to_pylist() if s in batch.column_names else [None] * batch.num_rows for s in CONSENT_SIGNALS]
        consent = {member: given for member, *given in zip(members, *signals) if any(given)}
        return sorted(members), consent
