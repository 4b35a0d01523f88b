"""Spherical k-means with FAISS, and the numpy pieces around it. No Spark here: every function
takes and returns arrays, so it is tested with numpy alone.

Determinism (same inputs, same machine and FAISS build -> same bytes):
- `train_kmeans` seeds everything it draws (k-means++ picks, FAISS's own seed); FAISS's k-means
  gives the same centroids with 1 or 2 OpenMP threads (checked in tests/cluster/test_kmeans.py).
- `assign` gives each row a result that does not depend on which other rows share its batch.
  FAISS's float32 scores do (its BLAS blocking and a non-BLAS path below 20 queries round
  differently, ~1e-7), so FAISS only proposes the two best centroids of each row and the winner and
  its distance are recomputed row by row in float64 (ties: lowest cluster id). Partitioning the
  input differently therefore gives identical assignments.
- Per-cluster distance sums are kept as integers in units of 2**-32 (`quantize_dist`), so partial
  sums from any number of tasks add up exactly, in any order.
Across CPUs (FAISS's AVX2 vs AVX512 builds) or on a GPU, results can differ in the last bits.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import CENTROIDS, CLUSTER_STATS

log = logging.getLogger("curate")

DIST_SCALE = 2**32  # distance sums are integers in units of 2**-32 (dist <= 2 -> <= 2**33 per row)
ROW_BLOCK = 4096  # rows per float64 block in the row-wise helpers (bounds temporary memory)
FAISS_MIN_POINTS_PER_CENTROID = 39  # FAISS warns below this; we log instead


@dataclass(frozen=True)
class KMeansResult:
    centroids: np.ndarray  # float32 [k, d], unit norm
    objective: float  # sum over training rows of cos(x, nearest centroid), at the last iteration
    n_train: int
    device: Literal["cpu", "gpu"]
    best_redo: int  # which of the `redo` trainings was kept


def _seed31(seed: int, salt: int = 0) -> int:
    """A FAISS seed (a C int) from any Python integer."""
    return (seed + 1_000_003 * salt) % (2**31 - 1)


def _rng(seed: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed % 2**64, salt])


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32), each computed on its own in float64; zero rows stay 0."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty_like(x)
    for a in range(0, len(x), ROW_BLOCK):
        block = x[a : a + ROW_BLOCK].astype(np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        norms[norms == 0] = 1.0
        out[a : a + ROW_BLOCK] = block / norms[:, None]
    return out


def row_dots(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dot(x[i], y[i]) for every row, in float64, each row on its own (independent of the batch)."""
    out = np.empty(len(x), dtype=np.float64)
    for a in range(0, len(x), ROW_BLOCK):
        out[a : a + ROW_BLOCK] = np.einsum(
            "ij,ij->i", x[a : a + ROW_BLOCK].astype(np.float64), y[a : a + ROW_BLOCK].astype(np.float64)
        )
    return out


def kmeans_plus_plus(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means++ seeding for unit vectors: the first centre uniform, each next one drawn with
    probability proportional to 1 - cos(x, nearest centre so far) (= squared distance / 2)."""
    n = len(x)
    if n < k:
        raise ValueError(f"k-means++ needs at least k={k} points, got {n}")
    rng = _rng(seed, 1)
    centres = np.empty((k, x.shape[1]), dtype=np.float32)
    centres[0] = x[rng.integers(n)]
    best = x @ centres[0]
    for j in range(1, k):
        weights = np.cumsum(np.maximum(1.0 - best.astype(np.float64), 0.0))
        if weights[-1] > 0:
            i = int(np.searchsorted(weights, rng.random() * weights[-1], side="right"))
        else:  # every point sits on a centre already
            i = int(rng.integers(n))
        centres[j] = x[min(i, n - 1)]
        np.maximum(best, x @ centres[j], out=best)
    return centres


def init_points(n: int, k: int) -> int:
    """How many leading rows of the (already random) training sample k-means++ looks at: enough to
    spread the centres, few enough to cost a few percent of the FAISS training."""
    return min(n, max(16 * k, 4096))


def use_gpu() -> bool:
    """faiss-gpu with at least one visible GPU."""
    get = getattr(faiss, "get_num_gpus", None)
    return bool(get and get() > 0)


def train_kmeans(
    x: np.ndarray,
    k: int,
    *,
    iterations: int = 20,
    redo: int = 1,
    seed: int = 0,
    max_points_per_centroid: int = 256,
    init: Literal["kmeans++", "random"] = "kmeans++",
    gpu: bool | None = None,
) -> KMeansResult:
    """Spherical k-means of the rows of `x` (unit vectors, float32 [n, d]) with faiss.Kmeans.

    `redo` trainings with different seeds, the one with the highest objective kept (ties: the
    first). `gpu=None` uses a GPU when faiss-gpu sees one.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if n < k:
        raise ValueError(f"k-means with k={k} needs at least {k} training points, got {n}")
    if n < k * FAISS_MIN_POINTS_PER_CENTROID:
        log.warning("k-means: %d training points for %d centroids (FAISS advises >= %d)",
                    n, k, k * FAISS_MIN_POINTS_PER_CENTROID)
    gpu = use_gpu() if gpu is None else gpu
    best: tuple[float, int, np.ndarray] | None = None
    for r in range(redo):
        km = faiss.Kmeans(
            d, k, niter=iterations, nredo=1, spherical=True, seed=_seed31(seed, r),
            max_points_per_centroid=max_points_per_centroid, min_points_per_centroid=1,
            verbose=False, gpu=gpu,
        )
        start = None
        if init == "kmeans++":
            start = kmeans_plus_plus(x[: init_points(n, k)], k, _seed31(seed, r))
        km.train(x, init_centroids=start)
        objective = float(km.obj[-1])
        if best is None or objective > best[0]:
            best = (objective, r, km.centroids)
    assert best is not None
    centroids = normalize_rows(best[2])
    return KMeansResult(centroids, best[0], n, "gpu" if gpu else "cpu", best[1])


# ---------------------------------------------------------------- assignment


def default_nlist(k: int) -> int:
    return max(1, min(k, round(math.sqrt(k))))


def build_index(centroids: np.ndarray, kind: Literal["flat", "ivf"] = "flat", nlist: int = 0,
                nprobe: int = 8) -> faiss.Index:
    """Inner-product index over the centroids. "flat": exact. "ivf": IndexIVFFlat with `nlist`
    cells (0: about sqrt(K)) of which `nprobe` are searched per point, approximate unless
    nprobe >= nlist; its cells are trained with FAISS's fixed default seed."""
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    k, d = c.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    else:
        nlist = min(k, nlist or default_nlist(k))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 1  # K centroids may be few per cell: no stderr warning
        index.train(c)
        index.nprobe = min(nprobe, nlist)
        index.own_fields = True
        quantizer.this.disown()
    index.add(c)
    return index


def index_to_bytes(index: faiss.Index) -> bytes:
    return faiss.serialize_index(index).tobytes()


def index_from_bytes(data: bytes) -> faiss.Index:
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def assign(index: faiss.Index, centroids: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid by inner product of each row of `x` (unit vectors): (cluster_id int32,
    dist_to_centroid = 1 - cos float32, clipped at 0).

    FAISS proposes each row's two best centroids; both are re-scored in float64 and the better
    kept (ties: lower id), so a row's result does not depend on its batch. Rows the index returns
    no candidate for (possible with ivf) are scored against every centroid.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, k = len(x), len(centroids)
    ids = np.full(n, -1, dtype=np.int64)
    sims = np.full(n, -np.inf, dtype=np.float64)
    if n == 0:
        return ids.astype(np.int32), sims.astype(np.float32)
    _, labels = index.search(x, min(2, k))
    for j in range(labels.shape[1]):
        lab = labels[:, j]
        ok = lab >= 0
        s = np.full(n, -np.inf)
        s[ok] = row_dots(x[ok], centroids[lab[ok]])
        better = ok & ((s > sims) | ((s == sims) & (lab < ids)))
        ids[better], sims[better] = lab[better], s[better]
    lost = np.flatnonzero(ids < 0)
    if len(lost):
        all_sims = x[lost].astype(np.float64) @ centroids.astype(np.float64).T
        ids[lost] = np.argmax(all_sims, axis=1)
        sims[lost] = row_dots(x[lost], centroids[ids[lost]])
    dist = np.maximum(1.0 - sims, 0.0).astype(np.float32)
    return ids.astype(np.int32), dist


# ---------------------------------------------------------------- statistics


def quantize_dist(dist: np.ndarray) -> np.ndarray:
    """Distances as int64 multiples of 2**-32, so sums are exact and independent of order."""
    return np.rint(np.asarray(dist, dtype=np.float64) * DIST_SCALE).astype(np.int64)


@dataclass
class PartialStats:
    """Per-cluster aggregates of some rows; `merge` is exact and order-independent."""

    size: np.ndarray  # int64 [k]
    dist_qsum: np.ndarray  # int64 [k], sum of quantize_dist
    max_dist: np.ndarray  # float32 [k], -inf where empty

    @classmethod
    def empty(cls, k: int) -> PartialStats:
        return cls(np.zeros(k, np.int64), np.zeros(k, np.int64), np.full(k, -np.inf, np.float32))

    def add(self, ids: np.ndarray, dist: np.ndarray) -> None:
        k = len(self.size)
        self.size += np.bincount(ids, minlength=k).astype(np.int64)
        np.add.at(self.dist_qsum, ids, quantize_dist(dist))
        np.maximum.at(self.max_dist, ids, np.asarray(dist, dtype=np.float32))

    def merge(self, other: PartialStats) -> None:
        self.size += other.size
        self.dist_qsum += other.dist_qsum
        np.maximum(self.max_dist, other.max_dist, out=self.max_dist)


def neighbour_distances(centroids: np.ndarray, neighbours: int) -> np.ndarray:
    """d_inter per centroid: mean(1 - cos) to its min(neighbours, K-1) nearest other centroids
    (float64 [K]; NaN when K == 1). Scored in float64, blocks of rows at a time."""
    c = np.asarray(centroids, dtype=np.float64)
    k = len(c)
    m = min(neighbours, k - 1)
    out = np.full(k, np.nan)
    if m < 1:
        return out
    for a in range(0, k, 1024):
        sims = c[a : a + 1024] @ c.T
        rows = np.arange(len(sims))
        sims[rows, a + rows] = -np.inf
        top = -np.partition(-sims, m - 1, axis=1)[:, :m]
        out[a : a + 1024] = np.mean(1.0 - top, axis=1)
    return out


def cluster_stats_table(stats: PartialStats, d_inter: np.ndarray) -> pa.Table:
    """The CLUSTER_STATS rows of all K clusters: empty clusters get size 0 and null distances."""
    size = stats.size
    has = size > 0
    mean = np.full(len(size), np.nan)
    # exact integer sum / count, rounded once
    mean[has] = [int(q) / (int(s) * DIST_SCALE) for q, s in zip(stats.dist_qsum[has], size[has])]
    max_dist = np.where(has, stats.max_dist.astype(np.float64), np.nan)
    complexity = mean * d_inter

    def col(v: np.ndarray) -> pa.Array:
        return pa.array(v, type=pa.float64(), from_pandas=True)  # NaN -> null

    return pa.table(
        {
            "cluster_id": pa.array(np.arange(len(size), dtype=np.int32)),
            "size": pa.array(size, type=pa.int64()),
            "mean_dist": col(mean),
            "max_dist": col(max_dist),
            "d_inter": col(d_inter),
            "complexity": col(complexity),
        },
        schema=CLUSTER_STATS,
    )


def centroids_table(centroids: np.ndarray) -> pa.Table:
    """The CENTROIDS rows: (cluster_id, centroid list<float32>)."""
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    k, d = c.shape
    offsets = pa.array(np.arange(0, (k + 1) * d, d, dtype=np.int32))
    lists = pa.ListArray.from_arrays(offsets, pa.array(c.ravel()))
    return pa.table({"cluster_id": pa.array(np.arange(k, dtype=np.int32)), "centroid": lists}, schema=CENTROIDS)


# ---------------------------------------------------------------- Arrow and sampling helpers


def vectors_from_arrow(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A list<float> column without nulls as a float32 [n, d] matrix; every list must have length d."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    n = sum(len(c) for c in chunks)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if column.null_count:
        raise ValueError("vectors_from_arrow: the column has null rows")
    lengths = pc.list_value_length(column)
    d = pc.min(lengths).as_py()
    if d != pc.max(lengths).as_py():
        raise ValueError(f"embeddings of different lengths ({d} to {pc.max(lengths).as_py()})")
    flats = [c.flatten() for c in chunks]
    if any(f.null_count for f in flats):
        raise ValueError("embeddings contain null elements")
    values = np.concatenate([f.to_numpy(zero_copy_only=False) for f in flats]) if len(flats) > 1 \
        else flats[0].to_numpy(zero_copy_only=False)
    return values.astype(np.float32, copy=False).reshape(n, d)


def sample_margin(target: int) -> int:
    """Extra rows to aim for so a Bernoulli draw reaches `target` but for ~1e-9 of the time."""
    return math.ceil(6 * math.sqrt(target)) + 16


def hash_threshold(n_rows: int, want: int) -> int | None:
    """Signed 64-bit threshold T such that a uniform 64-bit hash is < T with probability
    want / n_rows; None when every row is wanted."""
    if want >= n_rows:
        return None
    return -(2**63) + (want * 2**64) // n_rows
