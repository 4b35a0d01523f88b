"""Pairs of 64-bit perceptual hashes within a Hamming distance, found by banding in Spark.

The 64 bits are split into t + 1 contiguous bands (as even as possible: 13/13/13/13/12 bits for
t = 4). Two hashes at distance <= t differ in at most t bits, so at least one band holds none of
them and is identical in both (pigeonhole). Joining on (band index, band value) therefore finds every
pair within t; each candidate is then checked on all 64 bits. There is no all-pairs comparison: a
hash meets only the hashes that share one of its t + 1 bands. The work is over distinct hash values,
so many samples with one hash (copies, blank images) cost one row.

Aspect guard (optional): pHash squashes every image to 32x32, so two different images of different
shapes can hash alike. With `max_aspect_change`, nodes are distinct (phash, aspect key) pairs and
only nodes whose aspect ratios are within that relative change are paired (checked exactly on
ln(width / height) in millionths). Resizing and re-encoding keep the aspect ratio up to rounding.

Bucket cap: a (band, value) bucket with more than `max_bucket` distinct hashes (on either side of a
cross join) would cost up to max_bucket² comparisons and is not joined. Pairs that agree only on such
a band are missed (pairs that also agree on another band are still found); the skipped buckets are
returned so callers can report them. Uniformly spread hashes put about n / 2^13 distinct hashes in a
t = 4 bucket, so with the default cap of 5000 nothing is skipped below ~4 * 10^7 distinct hashes;
real pHashes cluster more, hence the explicit cap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

HASH_BITS = 64
ASPECT_SCALE = 1_000_000  # aspect keys are ln(width / height) in millionths


def band_layout(threshold: int) -> list[tuple[int, int]]:
    """(lowest bit, width) of each of the `threshold + 1` bands that together cover the 64 bits."""
    n_bands = threshold + 1
    if not 1 <= n_bands <= HASH_BITS:
        raise ValueError(f"threshold must be in [0, {HASH_BITS - 1}], got {threshold}")
    base, extra = divmod(HASH_BITS, n_bands)
    layout, start = [], 0
    for band in range(n_bands):
        width = base + (1 if band < extra else 0)
        layout.append((start, width))
        start += width
    return layout


def hamming(a: Column, b: Column) -> Column:
    """Hamming distance of two 64-bit hashes (signed longs)."""
    return F.bit_count(a.bitwiseXOR(b))


def aspect_key(width: Column, height: Column) -> Column:
    """The aspect ratio as a long, round(ln(width / height) * ASPECT_SCALE): a node key column that
    compares exactly (samples of one image always agree)."""
    return F.round(F.log(width.cast("double") / height.cast("double")) * ASPECT_SCALE).cast("long")


def _band_value(shift: int, width: int) -> Column:
    if width == HASH_BITS:
        return F.col("phash")
    return F.shiftrightunsigned(F.col("phash"), shift).bitwiseAND(F.lit((1 << width) - 1))


def _banded(nodes: DataFrame, keys: list[str], layout: list[tuple[int, int]],
            max_bucket: int) -> tuple[DataFrame, DataFrame]:
    """((band, value, *keys) of each distinct node and band, buckets over the cap left out;
    (band, value, size) of the buckets left out)."""
    bands = F.array(*[F.struct(F.lit(i).alias("band"), _band_value(s, w).alias("value"))
                      for i, (s, w) in enumerate(layout)])
    banded = (nodes.select(*keys).where(F.col("phash").isNotNull()).distinct()
              .select(*keys, F.explode(bands).alias("b")).select("b.band", "b.value", *keys))
    sizes = banded.groupBy("band", "value").agg(F.count("*").alias("size"))
    kept = banded.join(sizes.where(F.col("size") <= max_bucket).select("band", "value"), ["band", "value"])
    return kept, sizes.where(F.col("size") > max_bucket)


@dataclass
class HashPairs:
    """Result of `hash_pairs`."""

    pairs: DataFrame  # phash_a, phash_b (+ aspect_a, aspect_b), distance (int)
    oversized: DataFrame  # band, value, size: buckets over the cap, not joined


def hash_pairs(left: DataFrame, right: DataFrame | None, threshold: int, max_bucket: int,
               max_aspect_change: float | None = None) -> HashPairs:
    """Pairs of distinct nodes within `threshold` bits, each pair once.

    A node is a distinct `phash` value of the input (nulls ignored), or with `max_aspect_change` a
    distinct (phash, aspect) pair (`aspect` column from `aspect_key`), and then only nodes whose
    aspect ratios differ by at most that relative amount are paired: pHash squashes every image to
    32x32, so it cannot tell images of different shapes apart by itself.
    With `right` None, pairs within `left`, the smaller node (phash, then aspect) as `_a`; otherwise
    every (left, right) pair, equal hashes (distance 0) included, `_a` from `left`.
    """
    keys = ["phash"] if max_aspect_change is None else ["phash", "aspect"]
    layout = band_layout(threshold)
    a, over_a = _banded(left, keys, layout, max_bucket)
    b, over_b = (a, over_a) if right is None else _banded(right, keys, layout, max_bucket)
    a, b = a.alias("a"), b.alias("b")
    cond = (F.col("a.band") == F.col("b.band")) & (F.col("a.value") == F.col("b.value"))
    if right is None:
        smaller = F.col("a.phash") < F.col("b.phash")
        if max_aspect_change is not None:
            smaller = smaller | ((F.col("a.phash") == F.col("b.phash")) & (F.col("a.aspect") < F.col("b.aspect")))
        cond = cond & smaller
    if max_aspect_change is not None:
        limit = int(np.floor(np.log1p(max_aspect_change) * ASPECT_SCALE))
        cond = cond & (F.abs(F.col("a.aspect") - F.col("b.aspect")) <= limit)
    pairs = (
        a.join(b, cond)
        .select(*[F.col(f"{side}.{k}").alias(f"{k}_{side}") for side in "ab" for k in keys])
        .withColumn("distance", hamming(F.col("phash_a"), F.col("phash_b")))
        .where(F.col("distance") <= threshold)
        .distinct()
    )
    oversized = over_a if right is None else over_a.unionByName(over_b)
    return HashPairs(pairs, oversized)


def node_groups(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the graph whose edges are (a[i], b[i]), nodes being int64 rows
    [m, k] (a phash, or phash and aspect): (every node [n, k] in lexicographic order, the smallest
    node of its component [n, k])."""
    m = len(a)
    both = np.concatenate([a, b]).astype(np.int64)
    nodes, index = np.unique(both, axis=0, return_inverse=True)
    index = index.reshape(-1)
    if m == 0:
        return nodes, nodes.copy()
    n = len(nodes)
    graph = coo_matrix((np.ones(m, dtype=np.int8), (index[:m], index[m:])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))  # nodes are sorted: the first index is the smallest
    return nodes, nodes[first[labels]]
