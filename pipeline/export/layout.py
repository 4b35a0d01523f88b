"""Which output shard each kept sample goes to: by samples per shard and, optionally, bytes per shard.

Kept samples are numbered 0..n-1 in output order. The ordered DataFrame carries `_pos`
(`monotonically_increasing_id()` taken right after the sort: partition number above bit 33, row
within the partition below), so a per-partition count on the driver turns it into the global index
without a single-partition window or an RDD `zipWithIndex`. Without a byte cap, shard = index //
samples_per_shard. With `max_shard_bytes` B, each sample's estimated start offset in the
concatenated output (a prefix sum over partitions: exact, and independent of how Spark partitioned
the rows) puts it in the byte window start // B; a window of more than samples_per_shard samples
is cut into that many equal pieces (sizes differ by at most one; no one-sample remainder shards), and
the non-empty pieces are numbered in order. As with webdataset's `ShardWriter(maxsize=...)`, a shard
can exceed B by the one sample that starts inside its window (plus the error of the size estimate,
`sample_bytes`). The layout depends only on the output order, so the same kept set and seed give
the same shards on any cluster.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.core.tasks import GROUP

TAR_BLOCK = 512
JSON_FIXED_BYTES = 420  # the .json member without caption and url: 330-360 bytes on the demo, + longer ids
POS = "_pos"  # monotonically_increasing_id() of the ordered rows
INDEX = "_index"  # the global output index
ROW_BITS = 33  # monotonically_increasing_id: the partition number sits above this bit


def _member_bytes(size: np.ndarray) -> np.ndarray:
    """Bytes one tar member takes: a header block plus its data padded to whole blocks."""
    return TAR_BLOCK + -(-size // TAR_BLOCK) * TAR_BLOCK


def sample_bytes(table: pa.Table | pa.RecordBatch) -> np.ndarray:
    """Estimated tar bytes of each exported sample (columns image_bytes, caption, url): image,
    .txt and .json members with their headers."""
    def octets(name: str) -> np.ndarray:
        return pc.fill_null(pc.binary_length(table.column(name)), 0).to_numpy().astype(np.int64)

    caption, url = octets("caption"), octets("url")
    image = table.column("image_bytes").to_numpy().astype(np.int64)
    return _member_bytes(image) + _member_bytes(caption) + _member_bytes(JSON_FIXED_BYTES + caption + url)


def with_positions(ordered: DataFrame) -> DataFrame:
    """`ordered` (just sorted) with `_pos`; persist the result, the layout reads it more than once."""
    return ordered.withColumn(POS, F.monotonically_increasing_id())


@dataclass(frozen=True)
class Layout:
    """Where every row of a positioned DataFrame goes."""

    samples_per_shard: int
    max_shard_bytes: int | None
    first_index: dict[int, int]  # partition -> global index of its first row
    first_byte: dict[int, int]  # partition -> estimated output offset of its first row
    windows: dict[int, tuple[int, int, int, int]]  # window -> first shard, first index, count, pieces
    n_shards: int

    def window_of(self, partition: int, offsets: np.ndarray) -> np.ndarray:
        """Byte window of rows whose offsets within `partition` are `offsets` (0 without a cap)."""
        if self.max_shard_bytes is None:
            return np.zeros(len(offsets), dtype=np.int64)
        return (self.first_byte[partition] + offsets) // self.max_shard_bytes

    def shard_of(self, window: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Output shard of rows in byte windows `window` with global indices `index`."""
        shard = np.empty(len(index), dtype=np.int64)
        for w in np.unique(window):
            first_shard, first_index, count, pieces = self.windows[int(w)]
            mine = window == w
            offset = index[mine] - first_index
            per = offset * pieces // count if self.max_shard_bytes is not None else offset // self.samples_per_shard
            shard[mine] = first_shard + per
        return shard

    def assign(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """A task's batches of a positioned DataFrame with `_index` (global output index) and
        `_group` (output shard) added."""
        for batch, partition, rows, starts in _partition_rows(batches, self.max_shard_bytes is not None):
            index = self.first_index[partition] + rows
            shard = self.shard_of(self.window_of(partition, starts), index)
            yield pa.RecordBatch.from_arrays([*batch.columns, pa.array(index, pa.int64()), pa.array(shard, pa.int32())],
                                             names=[*batch.schema.names, INDEX, GROUP])


def _partition_rows(batches: Iterator[pa.RecordBatch],
                    with_bytes: bool) -> Iterator[tuple[pa.RecordBatch, int, np.ndarray, np.ndarray]]:
    """(batch, partition, row within partition, byte offset within partition of each row) per batch
    of a task's rows, which arrive in `_pos` order (offsets are 0 without `with_bytes`)."""
    offset: dict[int, int] = {}
    for batch in batches:
        pos = batch.column(POS).to_numpy()
        partition = int(pos[0] >> ROW_BITS) if len(pos) else 0
        sizes = sample_bytes(batch) if with_bytes else np.zeros(len(pos), dtype=np.int64)
        ends = offset.get(partition, 0) + np.cumsum(sizes)
        starts = ends - sizes
        offset[partition] = int(ends[-1]) if len(ends) else offset.get(partition, 0)
        yield batch, partition, pos & ((1 << ROW_BITS) - 1), starts


def plan_layout(positioned: DataFrame, samples_per_shard: int, max_shard_bytes: int | None) -> Layout:
    """The layout of a DataFrame from `with_positions` (read once, twice with a byte cap)."""
    with_bytes = max_shard_bytes is not None

    def partition_sizes(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        sizes: dict[int, list[int]] = {}
        for batch in batches:
            pos = batch.column(POS).to_numpy()
            if len(pos) == 0:
                continue
            entry = sizes.setdefault(int(pos[0] >> ROW_BITS), [0, 0])
            entry[0] += len(pos)
            entry[1] += int(sample_bytes(batch).sum()) if with_bytes else 0
        yield pa.record_batch({"partition": pa.array(list(sizes), pa.int64()),
                               "rows": pa.array([v[0] for v in sizes.values()], pa.int64()),
                               "bytes": pa.array([v[1] for v in sizes.values()], pa.int64())})

    found = positioned.mapInArrow(partition_sizes, "partition long, rows long, bytes long").collect()
    partitions = sorted(found, key=lambda r: r["partition"])
    first_index = dict(zip((r["partition"] for r in partitions), accumulate((r["rows"] for r in partitions), initial=0)))
    first_byte = dict(zip((r["partition"] for r in partitions), accumulate((r["bytes"] for r in partitions), initial=0)))
    n = sum(r["rows"] for r in partitions)
    draft = Layout(samples_per_shard, max_shard_bytes, first_index, first_byte, {}, 0)
    extents = _window_extents(positioned, draft) if with_bytes else ({0: (0, n)} if n else {})
    windows: dict[int, tuple[int, int, int, int]] = {}
    n_shards = 0
    for window, (first, count) in sorted(extents.items()):
        pieces = math.ceil(count / samples_per_shard)
        windows[window] = (n_shards, first, count, pieces)
        n_shards += pieces
    return Layout(samples_per_shard, max_shard_bytes, first_index, first_byte, windows, n_shards)


def _window_extents(positioned: DataFrame, layout: Layout) -> dict[int, tuple[int, int]]:
    """window -> (first global index, count) over every row."""
    def runs(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for _, partition, rows, starts in _partition_rows(batches, True):
            index = layout.first_index[partition] + rows
            window = layout.window_of(partition, starts)
            values, first, counts = np.unique(window, return_index=True, return_counts=True)
            yield pa.record_batch({"window": pa.array(values, pa.int64()), "first": pa.array(index[first], pa.int64()),
                                   "count": pa.array(counts, pa.int64())})

    merged: dict[int, tuple[int, int]] = {}
    for r in positioned.mapInArrow(runs, "window long, first long, count long").collect():
        first, count = merged.get(r["window"], (r["first"], 0))
        merged[r["window"]] = (min(first, r["first"]), count + r["count"])
    return merged


