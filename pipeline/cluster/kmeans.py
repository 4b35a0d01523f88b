"""Spherical k-means with FAISS, and the numpy pieces around it. No Spark here: every function
takes and returns arrays, so it is tested with numpy alone.

Determinism (same inputs, same machine and FAISS build -> same bytes):
- `train_kmeans` seeds everything it draws (k-means++ picks, FAISS's own seed); FAISS's k-means
  gives the same centroids with 1 or 2 OpenMP threads (checked in tests/cluster/test_kmeans.py).
- `assign` gives each row a result that does not depend on which other rows share its batch.
  FAISS's float32 scores do (its BLAS blocking and a non-BLAS path below 20 queries round
  differently, ~1e-7), so FAISS only proposes the two best centroids of each row and the winner and
  its distance are recomputed row by row (ties: lowest cluster id). Partitioning the input
  differently therefore gives identical assignments.
- Per-cluster distance sums are kept as integers in units of 2**-32 (`quantize_dist`), so partial
  sums from any number of tasks add up exactly, in any order.
Across CPUs (FAISS's AVX2 vs AVX512 builds) or on a GPU, results can differ in the last bits.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import CENTROIDS, CLUSTER_STATS

log = logging.getLogger("curate")

DIST_SCALE = 2**32  # distance sums are integers in units of 2**-32 (dist <= 2 -> <= 2**33 per row)
ROW_BLOCK = 4096  # rows per block in the row-wise helpers (bounds temporary memory)
UNIT_TOL = 1e-5  # |norm^2 - 1| below which a row counts as unit norm and is left alone
NEAR_TIE = 1e-4  # FAISS's two best scores closer than this: both re-scored (FAISS's error ~1e-6)
FAISS_MIN_POINTS_PER_CENTROID = 39  # FAISS warns below this; we log instead


@dataclass(frozen=True)
class KMeansResult:
    centroids: np.ndarray  # float32 [k, d], unit norm
    objective: float  # sum over training rows of cos(x, nearest centroid), at the last iteration
    n_train: int
    device: Literal["cpu", "gpu"]
    best_redo: int  # which of the `redo` trainings was kept
    init_seconds: float = 0.0  # of which k-means++ seeding (all redos)


def _seed31(seed: int, salt: int = 0) -> int:
    """A FAISS seed (a C int) from any Python integer."""
    return (seed + 1_000_003 * salt) % (2**31 - 1)


def _rng(seed: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed % 2**64, salt])


def row_dots(x: np.ndarray, y: np.ndarray, y_rows: np.ndarray | None = None) -> np.ndarray:
    """dot(x[i], y[i]) for every row (float32), or dot(x[i], y[y_rows[i]]) (gathered a block at a
    time, never the whole [n, d]). Each row on its own: a row's result does not depend on the
    other rows of the batch nor on where the row sits in memory."""
    out = np.empty(len(x), dtype=np.float32)
    for a in range(0, len(x), ROW_BLOCK):
        ys = y[a : a + ROW_BLOCK] if y_rows is None else y[y_rows[a : a + ROW_BLOCK]]
        out[a : a + ROW_BLOCK] = np.einsum("ij,ij->i", x[a : a + ROW_BLOCK], ys)
    return out


def normalize_rows(x: np.ndarray, inplace: bool = False) -> np.ndarray:
    """Rows at unit L2 norm (float32). Rows already within UNIT_TOL of it are kept as they are (no
    copy when all are); the others are rescaled in float64, each on its own; zero rows stay 0."""
    x = np.asarray(x, dtype=np.float32)
    off = np.flatnonzero(np.abs(row_dots(x, x) - 1.0) > UNIT_TOL)
    if len(off) == 0:
        return x
    out = x if inplace else x.copy()
    for a in range(0, len(off), ROW_BLOCK):
        rows = off[a : a + ROW_BLOCK]
        block = x[rows].astype(np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        norms[norms == 0] = 1.0
        out[rows] = block / norms[:, None]
    return out


def small_matmul(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """x @ c.T for a few rows `c`, in row blocks small enough that OpenBLAS runs each on one
    thread (m*n*k <= 2**18): skinny products gain little from threads, whose spin-waits cost
    a lot on a busy node, and the result cannot depend on the thread count."""
    ct = np.ascontiguousarray(c.T)
    out = np.empty((len(x), len(c)), dtype=np.float32)
    rows = max(1, 2**18 // max(1, c.shape[0] * c.shape[1]))
    for a in range(0, len(x), rows):
        np.dot(x[a : a + rows], ct, out=out[a : a + rows])
    return out


def kmeans_plus_plus(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Greedy k-means++ seeding for unit vectors (Arthur & Vassilvitskii; the greedy form of
    scikit-learn): the first centre uniform; then, at each step, 2 + ln(k) candidates drawn with
    probability proportional to 1 - cos(x, nearest centre so far) (= squared distance / 2), and the
    one that lowers the total of those distances most is kept. Plain k-means++ too often puts two
    centres in one well-separated group, which Lloyd iterations do not undo."""
    n = len(x)
    if n < k:
        raise ValueError(f"k-means++ needs at least k={k} points, got {n}")
    rng = _rng(seed, 1)
    trials = 2 + int(math.log(k))
    centres = np.empty((k, x.shape[1]), dtype=np.float32)
    centres[0] = x[rng.integers(n)]
    gap = np.maximum(1.0 - small_matmul(x, centres[:1])[:, 0].astype(np.float64), 0.0)  # to nearest centre
    for j in range(1, k):
        cum = np.cumsum(gap)
        if cum[-1] > 0:
            picks = np.searchsorted(cum, rng.random(trials) * cum[-1], side="right")
        else:  # every point sits on a centre already
            picks = rng.integers(n, size=trials)
        picks = np.minimum(picks, n - 1)
        gaps = np.minimum(gap[:, None], np.maximum(1.0 - small_matmul(x, x[picks]).astype(np.float64), 0.0))
        best = int(np.argmin(gaps.sum(axis=0)))
        centres[j] = x[picks[best]]
        gap = gaps[:, best]
    return centres


def init_points(n: int, k: int, iterations: int = 20) -> int:
    """How many leading rows of the (already random) training sample k-means++ looks at: 8 per
    centre, fewer if its cost, K * m * (2 + ln K) dot products, would pass 2.5% of the training's
    K * n * iterations; at least 4096 (cheap) and at least k (k-means++ over k points is the
    random init)."""
    budget = iterations * n // (40 * (2 + int(math.log(k))))
    return min(n, max(k, 4096, min(8 * k, budget)))


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
    init_seconds = 0.0
    for r in range(redo):
        km = faiss.Kmeans(
            d, k, niter=iterations, nredo=1, spherical=True, seed=_seed31(seed, r),
            max_points_per_centroid=max_points_per_centroid, min_points_per_centroid=1,
            verbose=False, gpu=gpu,
        )
        start = None
        if init == "kmeans++":
            started = time.perf_counter()
            start = kmeans_plus_plus(x[: init_points(n, k, iterations)], k, _seed31(seed, r))
            init_seconds += time.perf_counter() - started
        km.train(x, init_centroids=start)
        objective = float(km.obj[-1])
        if best is None or objective > best[0]:
            best = (objective, r, km.centroids)
    assert best is not None
    centroids = normalize_rows(best[2])
    return KMeansResult(centroids, best[0], n, "gpu" if gpu else "cpu", best[1], init_seconds)


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

    FAISS finds each row's two best centroids; the best is re-scored row by row (`row_dots`), and
    where the two are within NEAR_TIE the second too, the higher kept (ties: lower id). So a row's
    result does not depend on its batch. Rows the index returns no candidate for (possible with
    ivf) are scored against every centroid.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, k = len(x), len(centroids)
    if n == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.float32)
    scores, labels = index.search(x, min(2, k))
    ids = labels[:, 0].copy()
    if ids.min() >= 0:  # always with a flat index
        best = row_dots(x, centroids, ids)
    else:
        best = np.full(n, -np.inf, dtype=np.float32)
        found = np.flatnonzero(ids >= 0)
        best[found] = row_dots(x[found], centroids, ids[found])
    if labels.shape[1] > 1:
        close = np.flatnonzero((labels[:, 1] >= 0) & ~(scores[:, 0] - scores[:, 1] > NEAR_TIE))
        second = labels[close, 1]
        s2 = row_dots(x[close], centroids, second)
        better = (s2 > best[close]) | ((s2 == best[close]) & (second < ids[close]))
        ids[close[better]], best[close[better]] = second[better], s2[better]
    lost = np.flatnonzero(ids < 0)
    if len(lost):
        ids[lost] = np.argmax(x[lost].astype(np.float64) @ centroids.astype(np.float64).T, axis=1)
        best[lost] = row_dots(x[lost], centroids, ids[lost])
    dist = np.maximum(np.float32(1.0) - best, np.float32(0.0))
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


def vectors_from_arrow(column: pa.Array | pa.ChunkedArray, rows: np.ndarray | None = None) -> np.ndarray:
    """A list<float> column without nulls as a float32 [n, d] matrix (every list of length d).
    With `rows`, only those rows, in that order, gathered straight from the Arrow buffers; without,
    a zero-copy (read-only) view where the column is one chunk."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    n = sum(len(c) for c in chunks)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if column.null_count:
        raise ValueError("vectors_from_arrow: the column has null rows")
    lengths = pc.list_value_length(column)
    d, d_max = pc.min(lengths).as_py(), pc.max(lengths).as_py()
    if d != d_max:
        raise ValueError(f"embeddings of different lengths ({d} to {d_max})")
    views = []
    for chunk in chunks:
        flat = chunk.flatten()
        if flat.null_count:
            raise ValueError("embeddings contain null elements")
        views.append(flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(chunk), d))
    if rows is None:
        return views[0] if len(views) == 1 else np.concatenate(views)
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), d), dtype=np.float32)
    starts = np.cumsum([0] + [len(c) for c in chunks])
    which = np.searchsorted(starts, rows, side="right") - 1
    for i, view in enumerate(views):
        sel = np.flatnonzero(which == i)
        if len(sel):
            out[sel] = view[rows[sel] - starts[i]]
    return out


def sample_margin(target: int) -> int:
    """Extra rows to aim for so a Bernoulli draw reaches `target` but for ~1e-9 of the time."""
    return math.ceil(6 * math.sqrt(target)) + 16


def hash_threshold(n_rows: int, want: int) -> int | None:
    """Signed 64-bit threshold T such that a uniform 64-bit hash is < T with probability
    want / n_rows; None when every row is wanted."""
    if want >= n_rows:
        return None
    return -(2**63) + (want * 2**64) // n_rows
