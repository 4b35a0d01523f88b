"""Nearest reference image of every row, in Spark tasks: a FAISS flat inner-product index over a
reference set small enough to broadcast (an evaluation set, or one chunk of a dataset) is loaded once
per Python worker and searched by mapInArrow tasks; rows whose best cosine reaches a threshold are
written as Parquet.

The best reference is re-scored row by row (`row_dots`), so a row's cosine does not depend on the
batch FAISS searched it in. Rows and references are unit-normalised first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from functools import partial

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import Broadcast, TaskContext
from pyspark.sql import DataFrame

from pipeline.cluster.kmeans import index_from_bytes, index_to_bytes, normalize_rows, row_dots, vectors_from_arrow
from pipeline.stages.cluster import rebatch

MATCHES = "sample_id string, ref_index int, cos float"
_WORKER_INDEX: dict[str, tuple[faiss.Index, np.ndarray]] = {}  # one reference set per Python worker


def _worker_index(key: str, payload: Broadcast) -> tuple[faiss.Index, np.ndarray]:
    if key not in _WORKER_INDEX:
        _WORKER_INDEX.clear()
        index_bytes, ref = payload.value
        _WORKER_INDEX[key] = (index_from_bytes(index_bytes), ref)
    return _WORKER_INDEX[key]


def best_matches(x: np.ndarray, index: faiss.Index, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest reference row by inner product, its cosine re-scored row by row) for
    unit rows `x`."""
    _, labels = index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    best = labels[:, 0]
    return best.astype(np.int32), row_dots(x, ref[best])


def search_partition(batches: Iterator[pa.RecordBatch], *, payload: Broadcast, key: str, min_cos: float,
                     batch_size: int) -> Iterator[pa.RecordBatch]:
    """mapInArrow body over (sample_id, image_emb): MATCHES rows with cos >= min_cos."""
    task = TaskContext.get()
    faiss.omp_set_num_threads(max(1, task.cpus()) if task else 1)
    index, ref = _worker_index(key, payload)
    for table in rebatch(batches, batch_size):
        emb = table.column("image_emb")
        if emb.null_count:
            table = table.filter(pc.is_valid(emb))
        if table.num_rows == 0:
            continue
        best, cos = best_matches(normalize_rows(vectors_from_arrow(table.column("image_emb"))), index, ref)
        hit = cos >= min_cos
        yield pa.RecordBatch.from_pydict(
            {"sample_id": table.column("sample_id").filter(pa.array(hit)).combine_chunks(),
             "ref_index": pa.array(best[hit], pa.int32()), "cos": pa.array(cos[hit], pa.float32())}
        )


def write_nearest(queries: DataFrame, ref: np.ndarray, min_cos: float, path: str, batch_size: int = 4096) -> None:
    """Write MATCHES Parquet under `path`: for each row of `queries` (sample_id, image_emb; null
    embeddings skipped) whose nearest row of `ref` (float32 [m, d]) has cosine >= `min_cos`, that
    row's index in `ref` and the cosine."""
    ref = np.ascontiguousarray(normalize_rows(ref), dtype=np.float32)
    index = faiss.IndexFlatIP(ref.shape[1])
    index.add(ref)
    index_bytes = index_to_bytes(index)
    sc = queries.sparkSession.sparkContext
    payload = sc.broadcast((index_bytes, ref))
    key = hashlib.sha256(index_bytes).hexdigest()
    body = partial(search_partition, payload=payload, key=key, min_cos=min_cos, batch_size=batch_size)
    try:
        queries.select("sample_id", "image_emb").mapInArrow(body, MATCHES).write.mode("overwrite").parquet(path)
    finally:
        payload.destroy()
