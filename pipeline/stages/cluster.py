"""Cluster: spherical k-means (FAISS) of the image embeddings, trained on a sample, applied to all.

1. Sample (Spark). Rows with an image embedding whose xxhash64(seed, uid) falls below a threshold
   (set from the row count, read from Parquet metadata, to give a little more than the sample size)
   are written by tasks to `_sample/`; the driver reads those back, sorts them by (hash, sample_id)
   and keeps the first `sample_size`: the same rows whatever the file layout or partitioning. A draw
   that comes up short (odds ~1e-9) is redone with twice the threshold. `_sample/` is then deleted.
2. Train (driver). k-means++ seeding + faiss.Kmeans(spherical=True), on faiss-gpu when a GPU is
   visible. Writes `centroids.npy` (float32 [K, d], unit norm) and `centroids/` (CENTROIDS).
3. Assign (Spark tasks). The serialized FAISS index (flat, or ivf) and the centroids are broadcast
   and loaded once per Python worker; mapInArrow tasks over the embeddings DataFrame (or, with
   `assign_from: files`, one task per Parquet file of it, read with pyarrow) assign
   `assign_batch_size` rows per FAISS call with `spark.task.cpus` threads, each writes
   `assignments/part-NNNNN.parquet` (ASSIGNMENTS) itself and returns exact per-cluster partial
   sums, merged on the driver.
4. Stats (driver). `cluster_stats/` (CLUSTER_STATS) from those sums and the centroids.

Frozen concepts (`cluster.centroids`: a K x d `.npy`, or a previous run's cluster folder): steps 1
and 2 are skipped; the given centroids (unit-normalised) are written as this run's and every
embedding is assigned to them, so runs over a growing pool share one concept model. Their file's
path, size and mtime are in the stage's input fingerprint; the manifest records `trained: false`.

The driver holds the sample (sample_size x d float32, twice at peak) and never the full table.
Fewer usable embeddings than `n_clusters` raises a ConfigError naming `cluster.n_clusters` (K is
never lowered silently: later stages' quotas depend on it). Rows whose image_emb is null get no
assignment and are counted as `no_embedding`.

Determinism: for a fixed seed and input, on one machine and FAISS build, `centroids.npy` is
byte-identical and the assignment and stats tables are equal, whatever the number, order and
partitioning of the input files: the sample is the same rows in the same order, FAISS's k-means
gives the same centroids at any thread count (checked 1/2/4), each row's assignment is re-scored
on its own (see pipeline.cluster.kmeans), and distance sums are exact integers. A GPU, or a CPU
where FAISS loads another SIMD build, may differ in the last bits.
"""

from __future__ import annotations

import io as pyio
import logging
import time
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark import TaskContext
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.cluster.broadcast import BroadcastIndex, rebatch
from pipeline.cluster.kmeans import (
    DIST_SCALE,
    PartialStats,
    assign,
    build_index,
    centroids_table,
    cluster_stats_table,
    hash_threshold,
    index_to_bytes,
    neighbour_distances,
    normalize_rows,
    row_dots,
    sample_margin,
    train_kmeans,
    vectors_from_arrow,
)
from pipeline.core import io
from pipeline.core.config import ConfigError, RunConfig
from pipeline.core.stage import RunContext, Stage
from pipeline.core.tables import CENTROIDS_NPY, embeddings_df
from schemas import ASSIGNMENTS

log = logging.getLogger("curate")

STAGE = "cluster"
PARTIALS = "cluster_id int, size long, dist_qsum long, max_dist float"  # cluster_id -1: null embeddings
NO_EMBEDDING = -1


# ---------------------------------------------------------------- sampling (Spark -> driver)


def write_part(batches: Iterator[pa.RecordBatch], *, out_dir: str) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: write this partition's rows as `out_dir/part-<partition>.parquet`; yield
    its row count."""
    task = TaskContext.get()
    kept = [b for b in batches if b.num_rows]
    rows = sum(b.num_rows for b in kept)
    if rows:
        buf = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_batches(kept), buf, compression="none")  # floats barely compress
        io.write_bytes_atomic(f"{out_dir}/part-{task.partitionId():05d}.parquet", buf.getvalue().to_pybytes())
    yield pa.RecordBatch.from_pydict({"rows": pa.array([rows], pa.int64())})


def draw_sample(ctx: RunContext, emb: DataFrame, target: int, scratch: str) -> tuple[np.ndarray, int]:
    """(the training sample: image embeddings of the `target` rows with the smallest
    (xxhash64(seed, uid), sample_id), in that order, unit-normalised, float32 [<= target, d];
    the table's row count)."""
    n_rows = emb.count()  # Parquet footers only
    hashed = emb.where(F.col("image_emb").isNotNull()).select(
        "sample_id", F.xxhash64(F.lit(str(ctx.cfg.seed)), F.col("uid")).alias("_hash"), "image_emb"
    )
    want = target + sample_margin(target)
    while True:
        threshold = hash_threshold(n_rows, want)
        draw = hashed if threshold is None else hashed.where(F.col("_hash") < F.lit(threshold))
        ctx.spark.sparkContext.setJobDescription(f"{STAGE}: draw a training sample of {target}")
        io.remove(scratch)
        draw.mapInArrow(partial(write_part, out_dir=scratch), "rows long").collect()
        table = io.read_parquet_dir(scratch)
        if table.num_rows >= target or threshold is None:
            break
        log.info("%s: sample draw came up short (%d < %d), redrawing", STAGE, table.num_rows, target)
        want *= 2
    io.remove(scratch)
    if table.num_rows == 0:
        return np.zeros((0, 0), dtype=np.float32), n_rows
    order = pc.sort_indices(table.select(["_hash", "sample_id"]),
                            sort_keys=[("_hash", "ascending"), ("sample_id", "ascending")])
    x = vectors_from_arrow(table.column("image_emb"), order[:target].to_numpy())
    return normalize_rows(x, inplace=True), n_rows


# ---------------------------------------------------------------- assignment (Spark tasks)

def assign_rows(table: pa.Table, index: faiss.Index, cents: np.ndarray) -> pa.Table:
    """ASSIGNMENTS rows for rows (sample_id, uid, image_emb) that all have an embedding."""
    x = vectors_from_arrow(table.column("image_emb"))
    if x.shape[1] != cents.shape[1]:
        raise ValueError(f"{STAGE}: embedding of dimension {x.shape[1]}, centroids have {cents.shape[1]}")
    ids, dist = assign(index, cents, normalize_rows(x))
    return pa.table(
        [table.column("sample_id").cast(pa.string()), table.column("uid").cast(pa.string()), pa.array(ids),
         pa.array(dist)],
        schema=ASSIGNMENTS,
    )


def assign_batches(batches: Iterable[pa.RecordBatch], index: faiss.Index, cents: np.ndarray,
                   batch_size: int) -> tuple[pa.Table | None, PartialStats, int]:
    """Assign a stream of (sample_id, uid, image_emb) batches, `batch_size` rows per FAISS call:
    (ASSIGNMENTS rows or None, per-cluster stats, rows without an embedding)."""
    stats = PartialStats.empty(len(cents))
    missing = 0
    parts = []
    for table in rebatch(batches, batch_size):
        emb = table.column("image_emb")
        if emb.null_count:
            missing += emb.null_count
            table = table.filter(pc.is_valid(emb))
        if table.num_rows:
            part = assign_rows(table, index, cents)
            stats.add(part.column("cluster_id").to_numpy(), part.column("dist_to_centroid").to_numpy())
            parts.append(part)
    return (pa.concat_tables(parts) if parts else None), stats, missing


def assign_partition(batches: Iterator[pa.RecordBatch], *, shipped: BroadcastIndex, batch_size: int,
                     out_dir: str) -> Iterator[pa.RecordBatch]:
    """mapInArrow body (assign_from: dataframe): assign this partition, write
    `part-<partition>.parquet`, yield PARTIALS rows (clusters it touched, then NO_EMBEDDING)."""
    index, cents = shipped.load()
    table, stats, missing = assign_batches(batches, index, cents, batch_size)
    if table is not None:
        io.write_parquet_atomic(f"{out_dir}/part-{TaskContext.get().partitionId():05d}.parquet", table)
    used = np.flatnonzero(stats.size)
    yield pa.RecordBatch.from_pydict(
        {
            "cluster_id": pa.array(np.append(used, NO_EMBEDDING), pa.int32()),
            "size": pa.array(np.append(stats.size[used], missing), pa.int64()),
            "dist_qsum": pa.array(np.append(stats.dist_qsum[used], 0), pa.int64()),
            "max_dist": pa.array(np.append(stats.max_dist[used], np.float32(0)), pa.float32()),
        }
    )


def assign_file(item: tuple[int, str], *, shipped: BroadcastIndex, batch_size: int,
                out_dir: str) -> tuple[PartialStats, int]:
    """Task body (assign_from: files): assign the rows of one Parquet file of the embeddings table,
    read with pyarrow; write `part-<file number>.parquet`; return (stats, rows without embedding)."""
    number, path = item
    index, cents = shipped.load()
    fs, p = io.filesystem(path)
    source = pq.ParquetFile(p, filesystem=fs)
    batches = source.iter_batches(batch_size=batch_size, columns=["sample_id", "uid", "image_emb"])
    table, stats, missing = assign_batches(batches, index, cents, batch_size)
    if table is not None:
        io.write_parquet_atomic(f"{out_dir}/part-{number:05d}.parquet", table)
    return stats, missing


def _merge(a: tuple[PartialStats, int], b: tuple[PartialStats, int]) -> tuple[PartialStats, int]:
    a[0].merge(b[0])
    return a[0], a[1] + b[1]


def assign_all(ctx: RunContext, emb: DataFrame, index_bytes: bytes, cents: np.ndarray,
               out_dir: str) -> tuple[PartialStats, int]:
    """Assign every row in Spark tasks (files under `out_dir`); (per-cluster stats, null rows)."""
    cfg = ctx.cfg.cluster
    k = len(cents)
    sc = ctx.spark.sparkContext
    shipped = BroadcastIndex.create(sc, index_bytes, cents)
    kwargs = {"shipped": shipped, "batch_size": cfg.assign_batch_size, "out_dir": out_dir}
    sc.setJobDescription(f"{STAGE}: assign to {k} centroids ({cfg.assign_from})")
    if cfg.assign_from == "files":
        files = sorted(emb.inputFiles())
        stats, missing = (
            sc.parallelize(list(enumerate(files)), len(files)).map(partial(assign_file, **kwargs)).treeReduce(_merge)
        )
        shipped.destroy()
        return stats, missing
    rows = (
        emb.select("sample_id", "uid", "image_emb")
        .mapInArrow(partial(assign_partition, **kwargs), PARTIALS)
        .groupBy("cluster_id")
        .agg(
            F.sum("size").alias("size"),
            F.sum(F.col("dist_qsum").cast("decimal(38,0)")).alias("dist_qsum"),  # exact, no overflow
            F.max("max_dist").alias("max_dist"),
        )
        .collect()
    )
    shipped.destroy()
    stats, missing = PartialStats.empty(k), 0
    for r in rows:
        if r["cluster_id"] == NO_EMBEDDING:
            missing = int(r["size"])
            continue
        stats.size[r["cluster_id"]] = r["size"]
        stats.dist_qsum[r["cluster_id"]] = int(r["dist_qsum"])
        stats.max_dist[r["cluster_id"]] = r["max_dist"]
    return stats, missing


# ---------------------------------------------------------------- the stage


def centroids_file(spec: str) -> str:
    """The `.npy` that `cluster.centroids` names: the file itself, or a cluster folder's centroids.npy."""
    return spec if spec.endswith(".npy") else f"{spec.rstrip('/')}/{CENTROIDS_NPY}"


def load_frozen_centroids(spec: str) -> np.ndarray:
    """The frozen centroids of `cluster.centroids` as unit-norm float32 [K, d] (never unpickled);
    a ConfigError naming the key when the file is not a finite 2-D numeric array of non-zero rows."""
    path = centroids_file(spec)
    key = f"config key '{STAGE}.centroids'"
    if not io.exists(path):
        raise ConfigError(f"{key}: no centroids file at '{path}'")
    try:
        array = np.load(pyio.BytesIO(io.read_bytes(path)), allow_pickle=False)
    except ValueError as err:
        raise ConfigError(f"{key}: '{path}' is not a plain .npy array ({err})") from None
    if array.ndim != 2 or array.shape[0] < 1 or not np.issubdtype(array.dtype, np.number):
        raise ConfigError(f"{key}: '{path}' holds {array.dtype} {array.shape}, expected a K x d numeric array")
    cents = normalize_rows(array.astype(np.float32))
    if not np.all(np.isfinite(cents)) or np.any(np.abs(row_dots(cents, cents) - 1.0) > 1e-3):
        raise ConfigError(f"{key}: '{path}' has non-finite or zero rows")
    return cents


def embedding_dim(emb: DataFrame) -> int | None:
    """The length of the image embeddings (None when no row has one)."""
    row = emb.where(F.col("image_emb").isNotNull()).select(F.size("image_emb").alias("d")).first()
    return None if row is None else int(row["d"])


def _write_npy(path: str, array: np.ndarray) -> None:
    buf = pyio.BytesIO()
    np.save(buf, array, allow_pickle=False)
    io.write_bytes_atomic(path, buf.getvalue())


class Cluster(Stage):
    """Embeddings -> centroids.npy + centroids/ + assignments/ + cluster_stats/ (see module doc)."""

    name = STAGE
    reads = ("embeddings",)
    writes = ("centroids", "assignments", "cluster_stats")
    seeded = True  # the seed draws the training sample and seeds FAISS

    def external_files(self, cfg: RunConfig) -> list[str]:
        """The frozen centroids file, when the run uses one."""
        return [centroids_file(cfg.cluster.centroids)] if cfg.cluster.centroids else []

    def train(self, ctx: RunContext, emb: DataFrame, out_dir: str) -> tuple[np.ndarray, dict[str, Any]]:
        """Centroids trained on a seeded sample of `emb`, and the training's manifest counts."""
        cfg = ctx.cfg.cluster
        k = cfg.n_clusters
        t0 = time.time()
        target = min(cfg.sample_size, k * cfg.max_points_per_centroid)
        x, n_rows = draw_sample(ctx, emb, target, f"{out_dir}/_sample")
        if len(x) < k:
            raise ConfigError(
                f"config key '{STAGE}.n_clusters': {k} clusters need at least {k} embeddings, but the "
                f"embeddings table has {len(x)} rows with an image embedding; lower it"
            )
        n_train, dim = x.shape
        sample_seconds = time.time() - t0
        t0 = time.time()
        result = train_kmeans(x, k, iterations=cfg.iterations, redo=cfg.redo, seed=ctx.cfg.seed,
                              max_points_per_centroid=cfg.max_points_per_centroid, init=cfg.init)
        del x
        log.info("%s: trained %d centroids on %d x %d (%s) in %.1fs", STAGE, k, n_train, dim,
                 result.device, time.time() - t0)
        return result.centroids, {
            "n": n_rows, "trained": True, "sample_size": n_train,
            "objective": result.objective,  # sum of cos(x, centroid) over the training sample
            "sample_mean_cos": result.objective / n_train, "device": result.device, "init": cfg.init,
            "seconds": {"sample": sample_seconds, "train": time.time() - t0, "init": result.init_seconds},
        }

    def frozen(self, ctx: RunContext, emb: DataFrame) -> tuple[np.ndarray, dict[str, Any]]:
        """The frozen centroids of `cluster.centroids`, checked against the embeddings' length."""
        spec = ctx.cfg.cluster.centroids
        cents = load_frozen_centroids(spec)
        dim = embedding_dim(emb)
        if dim is not None and dim != cents.shape[1]:
            raise ConfigError(f"config key '{STAGE}.centroids': its centroids have {cents.shape[1]} dimensions, "
                              f"the image embeddings {dim}")
        log.info("%s: %d frozen centroids from %s (no training)", STAGE, len(cents), centroids_file(spec))
        return cents, {"n": emb.count(), "trained": False, "centroids_from": centroids_file(spec), "seconds": {}}

    def execute(self, ctx: RunContext, out_dir: str) -> dict[str, Any]:
        cfg = ctx.cfg.cluster
        emb = embeddings_df(ctx)
        cents, counts = self.frozen(ctx, emb) if cfg.centroids else self.train(ctx, emb, out_dir)
        k, dim = cents.shape
        times = counts.pop("seconds")
        _write_npy(f"{out_dir}/{CENTROIDS_NPY}", cents)
        io.write_parquet_atomic(f"{out_dir}/centroids/part-00000.parquet", centroids_table(cents))

        t0 = time.time()
        index_bytes = index_to_bytes(build_index(cents, cfg.index, cfg.ivf_nlist, cfg.nprobe))
        stats, missing = assign_all(ctx, emb, index_bytes, cents, f"{out_dir}/assignments")
        times["assign"] = time.time() - t0

        assigned = int(stats.size.sum())
        written = ctx.spark.read.parquet(f"{out_dir}/assignments").count() if assigned else 0
        if written != assigned:
            raise RuntimeError(f"{STAGE}: tasks reported {assigned} assignments, files hold {written}")
        table = cluster_stats_table(stats, neighbour_distances(cents, cfg.neighbours))
        io.write_parquet_atomic(f"{out_dir}/cluster_stats/part-00000.parquet", table)
        dist_total = int(stats.dist_qsum.sum())
        return {
            **counts,
            "assigned": assigned,
            "no_embedding": missing,
            "k": int(k),
            "dim": int(dim),
            "mean_dist": dist_total / (assigned * DIST_SCALE) if assigned else None,
            "empty_clusters": int((stats.size == 0).sum()),
            "largest_cluster": int(stats.size.max()),
            "index": cfg.index,
            "assign_from": cfg.assign_from,
            "seconds": {name: round(s, 3) for name, s in times.items()},
        }
