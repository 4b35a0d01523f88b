"""Nearest reference image of every row, in Spark tasks: a FAISS flat inner-product index over a
reference set small enough to broadcast (an evaluation set, or one chunk of a dataset) is loaded once
per Python worker and searched by mapInArrow tasks; rows whose best cosine reaches a threshold are
written as Parquet.

The best reference is re-scored row by row (`row_dots`), so a row's cosine does not depend on the
batch FAISS searched it in. Rows and references are unit-normalised first.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame

from pipeline.cluster.broadcast import BroadcastIndex, rebatch
from pipeline.cluster.kmeans import build_index, index_to_bytes, normalize_rows, row_dots, vectors_from_arrow

MATCHES = "sample_id string, ref_index int, cos float"
def best_matches(x: np.ndarray, index: faiss.Index, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest reference row by inner product, its cosine re-scored row by row) for
    unit rows `x`."""
    _, labels = index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    best = labels[:, 0]
    return best.astype(np.int32), row_dots(x, ref[best])


def search_partition(batches: Iterator[pa.RecordBatch], *, shipped: BroadcastIndex, min_cos: float,
                     batch_size: int) -> Iterator[pa.RecordBatch]:
    """mapInArrow body over (sample_id, image_emb): MATCHES rows with cos >= min_cos."""
    index, ref = shipped.load()
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
    shipped = BroadcastIndex.create(queries.sparkSession.sparkContext, index_to_bytes(build_index(ref)), ref)
    body = partial(search_partition, shipped=shipped, min_cos=min_cos, batch_size=batch_size)
    try:
        queries.select("sample_id", "image_emb").mapInArrow(body, MATCHES).write.mode("overwrite").parquet(path)
    finally:
        shipped.destroy()
