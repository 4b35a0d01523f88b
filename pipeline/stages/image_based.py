"""DataComp's image-based filter: keep the pool samples whose nearest centroid is the nearest
centroid of at least one target-set image (DataComp uses ImageNet's training images).

The target set is either img2dataset/WebDataset shards, whose images are embedded with the embed
stage's model in one Spark task per tar (each task returns only per-cluster counts), or `.npy`
image embeddings (a file, or a folder of `*.npy` files, float [n, d], read one file at a time with
allow_pickle=False on the driver and assigned in chunks). Target images that do not decode are skipped and
counted. The matched clusters are written to `image_based/target_clusters/` (cluster_id,
target_images)."""

from __future__ import annotations

import io as pyio
import posixpath
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark import Broadcast
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline.cluster.kmeans import assign, build_index, normalize_rows
from pipeline.core import io
from pipeline.core.config import ConfigError, IngestConfig, RunConfig
from pipeline.core.stage import RunContext
from pipeline.core.tars import iter_tar_samples
from pipeline.core.tasks import run_grouped
from pipeline.core.tables import centroids
from pipeline.imaging import ImageRejected, probe_image
from pipeline.prune.select import centroid_distances, clustered_pool, decisions
from pipeline.prune.step import PruneStep
from pipeline.embedding.shards import EncodeSettings

CHUNK = 65_536  # target rows assigned per FAISS call


def nearest_counts(x: np.ndarray, cents: np.ndarray) -> np.ndarray:
    """How many rows of `x` (image embeddings) have each centroid as their nearest (int64 [K])."""
    if x.shape[1] != cents.shape[1]:
        raise ConfigError(f"config key 'image_based.target': embeddings of dimension {x.shape[1]}, "
                          f"centroids have {cents.shape[1]}")
    index = build_index(cents)
    counts = np.zeros(len(cents), dtype=np.int64)
    for a in range(0, len(x), CHUNK):
        ids, _ = assign(index, cents, normalize_rows(np.asarray(x[a : a + CHUNK], dtype=np.float32)))
        counts += np.bincount(ids, minlength=len(cents))
    return counts


def npy_files(target: str) -> list[str]:
    """The .npy files a target names (itself, or the sorted *.npy of a folder); [] for shards."""
    fs, path = io.filesystem(target)
    if path.endswith(".npy"):
        return [target]
    if fs.isdir(path):
        return sorted(fs.glob(posixpath.join(path, "*.npy")))
    return []


def _usable(data: bytes, caps: IngestConfig) -> bool:
    """The target image decodes within ingest's pixel and aspect caps."""
    try:
        probe_image(data, caps.max_pixels, caps.max_aspect)
        return True
    except ImageRejected:
        return False


def tar_counts(tar: str, centroids: Broadcast, settings: EncodeSettings, caps: IngestConfig) -> dict[str, Any]:
    """Task body: embed the decodable images of one target tar; per-cluster nearest counts."""
    # torch and open_clip are imported only where images are encoded (slow to import, heavy)
    from pipeline.models import encode_pairs, get_clip, select_device

    cents = centroids.value
    images, skipped = [], 0
    fs, path = io.filesystem(tar)
    with fs.open(path, "rb") as f:
        for sample in iter_tar_samples(f, caps.max_image_bytes):
            if isinstance(sample, str):
                break
            image = sample.image()
            if sample.problem is None and image is not None and image[1].data and _usable(image[1].data, caps):
                images.append(image[1].data)
            else:
                skipped += 1
    clip = get_clip(settings.model, select_device(None))
    out = encode_pairs(clip, images, [""] * len(images), batch_size=settings.batch_size,
                       decode_workers=settings.decode_workers)
    counts = nearest_counts(out.image_emb, cents) if images else np.zeros(len(cents), np.int64)
    return {"counts": counts.tolist(), "images": len(images), "skipped": skipped}


def target_cluster_counts(ctx: RunContext, target: str, cents: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """(target images per nearest cluster, int64 [K]; {"images", "skipped"})."""
    files = npy_files(target)
    if files:
        counts = np.zeros(len(cents), dtype=np.int64)
        n = 0
        for file in files:
            fs, p = io.filesystem(file)
            with fs.open(p, "rb") as f:
                x = np.load(pyio.BytesIO(f.read()), allow_pickle=False)
            if x.ndim != 2:
                raise ConfigError(f"config key 'image_based.target': {file} holds shape {x.shape}, not [n, d]")
            counts += nearest_counts(x, cents)
            n += len(x)
        return counts, {"images": n, "skipped": 0}
    embed = ctx.cfg.embed
    if embed.model is None:
        raise ConfigError("config key 'image_based.target': shards need embed.model to embed them "
                          "(with precomputed embeddings, give the target set as .npy embeddings)")
    tars = io.list_shards(target)
    settings = EncodeSettings.of(embed, "image_based")
    caps = ctx.cfg.ingest
    ctx.spark.sparkContext.setJobDescription(f"image_based: embed {len(tars)} target shards")
    sc = ctx.spark.sparkContext
    payload = sc.broadcast(cents)
    pairs = sc.parallelize(list(enumerate(tars)), max(1, len(tars)))
    results = run_grouped(pairs, len(tars), lambda i, _: tar_counts(tars[i], payload, settings, caps))
    payload.destroy()
    counts = np.sum([r["counts"] for r in results], axis=0).astype(np.int64)
    return counts, {"images": sum(r["images"] for r in results), "skipped": sum(r["skipped"] for r in results)}


class ImageBased(PruneStep):
    """Removes samples whose cluster no target image is nearest to, with reason `image_based_miss`
    (score = dist_to_centroid)."""

    name = "image_based"
    score_labels = {"image_based_miss": "distance to the cluster centroid (1 - cosine)"}

    def kept_scores(self, ctx: RunContext, kept: DataFrame) -> dict[str, DataFrame]:
        """The kept samples' distances to their centroid."""
        return {"image_based_miss": centroid_distances(ctx, kept)}
    reads = ("pool", "assignments", "centroids")

    def external_files(self, cfg: RunConfig) -> list[str]:
        target = cfg.image_based.target
        return npy_files(target) or io.list_shards(target) if target is not None else []

    def prune(self, alive: DataFrame, ctx: RunContext, out_dir: str) -> tuple[DataFrame, dict[str, Any]]:
        counts, seen = target_cluster_counts(ctx, ctx.cfg.image_based.target, centroids(ctx))
        hit = np.flatnonzero(counts)
        table = pa.table({"cluster_id": pa.array(hit, pa.int32()), "target_images": pa.array(counts[hit], pa.int64())})
        io.write_parquet_atomic(f"{out_dir}/target_clusters/part-00000.parquet", table)
        hits = ctx.spark.createDataFrame([(int(c),) for c in hit],
                                         T.StructType([T.StructField("cluster_id", T.IntegerType())]))
        pool = clustered_pool(ctx, alive)
        removed = pool.join(F.broadcast(hits), "cluster_id", "left_anti")
        extra = {"target_images": seen["images"], "target_skipped": seen["skipped"], "target_clusters": len(hit),
                 "unassigned": alive.count() - pool.count()}
        return decisions(removed, self.name, "image_based_miss", F.col("dist_to_centroid")), extra
