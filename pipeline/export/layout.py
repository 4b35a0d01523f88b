"""Which output shard each kept sample goes to: by samples per shard and, optionally, bytes per shard.

Kept samples are numbered 0..n-1 in output order. Without a byte cap, shard = index //
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
from itertools import accumulate
from typing import Any

from pyspark import RDD

TAR_BLOCK = 512
JSON_FIXED_BYTES = 420  # the .json member without caption and url: 330-360 bytes on the demo, + longer ids


def _member_bytes(size: int) -> int:
    """Bytes one tar member takes: a header block plus its data padded to whole blocks."""
    return TAR_BLOCK + math.ceil(size / TAR_BLOCK) * TAR_BLOCK


def sample_bytes(row: dict[str, Any]) -> int:
    """Estimated tar bytes of one exported sample: image, .txt and .json members with headers."""
    caption = len((row["caption"] or "").encode())
    url = len((row["url"] or "").encode())
    return (_member_bytes(row["image_bytes"]) + _member_bytes(caption)
            + _member_bytes(JSON_FIXED_BYTES + caption + url))


def _windows(indexed: RDD, max_shard_bytes: int | None) -> RDD:
    """(window, index, row) for (row, index) pairs: the byte window of each sample's start offset,
    or window 0 for every sample without a byte cap."""
    if max_shard_bytes is None:
        return indexed.map(lambda ri: (0, ri[1], ri[0]))
    totals = indexed.mapPartitions(lambda rows: [sum(sample_bytes(row) for row, _ in rows)]).collect()
    starts = [0, *accumulate(totals)]

    def in_partition(partition: int, rows):
        offset = starts[partition]
        for row, index in rows:
            yield offset // max_shard_bytes, index, row
            offset += sample_bytes(row)

    return indexed.mapPartitionsWithIndex(in_partition)


def assign_shards(indexed: RDD, samples_per_shard: int, max_shard_bytes: int | None) -> tuple[RDD, int]:
    """(RDD of (shard, (index, row)), number of shards) for an RDD of (row, index) pairs numbered
    in output order. `indexed` is read two or three times: persist it (or the RDD it indexes)."""
    windows = _windows(indexed, max_shard_bytes)
    extents = (
        windows.map(lambda wir: (wir[0], (wir[1], 1)))
        .reduceByKey(lambda a, b: (min(a[0], b[0]), a[1] + b[1]))
        .collect()
    )
    base: dict[int, tuple[int, int, int, int]] = {}  # window -> first shard, first index, count, pieces
    n_shards = 0
    for window, (first, count) in sorted(extents):
        pieces = math.ceil(count / samples_per_shard)
        base[window] = (n_shards, first, count, pieces)
        n_shards += pieces
    equal_pieces = max_shard_bytes is not None

    def shard_of(window: int, index: int) -> int:
        first_shard, first_index, count, pieces = base[window]
        offset = index - first_index
        return first_shard + (offset * pieces // count if equal_pieces else offset // samples_per_shard)

    return windows.map(lambda wir: (shard_of(wir[0], wir[1]), (wir[1], wir[2]))), n_shards
