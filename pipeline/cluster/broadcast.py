"""A FAISS index shipped to Spark tasks, and the Arrow rebatching that batched searches use.

The index travels as bytes in one broadcast with an array beside it (centroids, reference vectors);
each Python worker deserialises it once (`BroadcastIndex.load`, keyed by the bytes' sha256) and
searches with as many FAISS threads as the task has CPUs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import faiss
import numpy as np
import pyarrow as pa
from pyspark import Broadcast, SparkContext, TaskContext

from pipeline.cluster.kmeans import index_from_bytes

_WORKER_INDEX: dict[str, tuple[faiss.Index, np.ndarray]] = {}  # one index per Python worker


@dataclass(frozen=True)
class BroadcastIndex:
    """A serialized FAISS index and an array, broadcast once; `load` them in a task."""

    payload: Broadcast
    key: str  # sha256 of the index bytes: which index a worker holds

    @classmethod
    def create(cls, sc: SparkContext, index_bytes: bytes, array: np.ndarray) -> BroadcastIndex:
        """Broadcast `index_bytes` (see kmeans.index_to_bytes) with `array`."""
        return cls(sc.broadcast((index_bytes, array)), hashlib.sha256(index_bytes).hexdigest())

    def load(self) -> tuple[faiss.Index, np.ndarray]:
        """In a task: (the index, the array), deserialised once per worker; FAISS gets the task's CPUs."""
        task = TaskContext.get()
        faiss.omp_set_num_threads(max(1, task.cpus()) if task else 1)
        if self.key not in _WORKER_INDEX:
            _WORKER_INDEX.clear()
            index_bytes, array = self.payload.value
            _WORKER_INDEX[self.key] = (index_from_bytes(index_bytes), array)
        return _WORKER_INDEX[self.key]

    def destroy(self) -> None:
        """Free the broadcast on the driver and executors."""
        self.payload.destroy()


def rebatch(batches: Iterable[pa.RecordBatch], size: int) -> Iterator[pa.Table]:
    """Regroup a stream of record batches into tables of exactly `size` rows (the last: fewer)."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        rows += batch.num_rows
        while rows >= size:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, size)
            rest = table.slice(size)
            pending, rows = rest.to_batches(), rest.num_rows
    if rows:
        yield pa.Table.from_batches(pending)
