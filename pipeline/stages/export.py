"""Export: the kept samples' original image bytes re-sharded into WebDataset tars + Parquet.

One Spark task per output shard reads each image straight from its source tar at the offset ingest
recorded (checking its sha256), and writes `{i:05d}.tar`, `{i:05d}.parquet`, then
`{i:05d}_stats.json`. `sizes.json` (read by open_clip's loader) and `manifest.json` (shards with
checksums, config hash, input fingerprint) are written once all shards exist. Each sample's `.json`
member and Parquet row carry its cluster id and CLIP score when the run clustered / embedded, and
the steps it passed; the Parquet optionally its embeddings. Shards are cut by samples per shard and
optionally bytes per shard (pipeline.export.layout). The stage folder starts empty and `_SUCCESS`
is written last, so a rerun never leaves old and new shards mixed.
"""

from __future__ import annotations

import hashlib
import io as pyio
import json
import logging
import tarfile
import time
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F

from pipeline.core import io
from pipeline.core.config import RunConfig
from pipeline.core.progress import RateLogger
from pipeline.core.stage import RunContext, Stage, alive_df, embeddings_df
from pipeline.core.tars import raise_if_source_changed, read_source_images, report_source_changed
from pipeline.core.tasks import run_grouped
from pipeline.export.layout import assign_shards
from pipeline.export.manifest import output_manifest
from schemas import EXPORT_ROWS

log = logging.getLogger("curate")

EXPORT_COLUMNS = ["sample_id", "uid", "shard", "shard_name", "key", "caption", "url", "width", "height", "image_ext",
                  "image_offset", "image_bytes"]


class _HashingWriter:
    """File wrapper that counts and hashes what is written through it."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.f.write(data)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, pyio.BytesIO(data))


def output_row(key: str, row: dict[str, Any]) -> dict[str, Any]:
    """The EXPORT_ROWS record (also the sample's .json member) of one kept sample."""
    return {
        "key": key,
        "uid": row["uid"],
        "sample_id": row["sample_id"],
        "source_shard": row["shard_name"],
        "orig_key": row["key"],
        "caption": row["caption"],
        "url": row["url"],
        "width": row["width"],
        "height": row["height"],
        "image_ext": row["image_ext"],
        "cluster_id": row["cluster_id"],
        "clip_score": row["clip_score"],
        "passed": row["passed"],
    }


def write_shard(out_dir: str, shard: int, rows: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """Write one output shard from (global index, sample row) pairs; return its stats."""
    name = f"{shard:05d}"
    records = []
    ordered = sorted(rows, key=lambda r: r[0])
    images = read_source_images(row for _, row in ordered)
    progress = RateLogger(f"export {name}.tar", len(rows), unit="samples")
    fs, tar_path = io.filesystem(f"{out_dir}/{name}.tar")
    try:
        with fs.open(tar_path + ".tmp", "wb") as raw:
            sink = _HashingWriter(raw)
            with tarfile.open(fileobj=sink, mode="w|", format=tarfile.GNU_FORMAT) as tar:
                for (index, row), image in zip(ordered, images):
                    key = f"{index:09d}"
                    record = output_row(key, row)
                    _add(tar, f"{key}.{row['image_ext']}", image)
                    _add(tar, f"{key}.txt", (row["caption"] or "").encode())
                    _add(tar, f"{key}.json", json.dumps(record, sort_keys=True).encode())
                    records.append({**record, "image_emb": row.get("image_emb"), "text_emb": row.get("text_emb")})
                    progress(1)
    finally:
        images.close()
    fs.mv(tar_path + ".tmp", tar_path)
    io.write_parquet_atomic(f"{out_dir}/{name}.parquet", pa.Table.from_pylist(records, schema=EXPORT_ROWS))
    stats = {"shard": f"{name}.tar", "count": len(records), "bytes": sink.size, "sha256": sink.sha.hexdigest()}
    io.write_json_atomic(f"{out_dir}/{name}_stats.json", stats)
    return stats


def write_shard_task(out_dir: str, shard: int, rows: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """Task body: `write_shard`, a changed source reported (see `report_source_changed`)."""
    return report_source_changed(f"{shard:05d}.tar", lambda: write_shard(out_dir, shard, rows))


def stop_if_source_changed(out_dir: str, stats: list[dict[str, Any]]) -> None:
    """Delete the whole export and raise one SourceChanged naming the sources if any task met one."""
    if any("source_changed" in s for s in stats):
        io.remove(out_dir)
        raise_if_source_changed("export stopped, nothing written", stats)


def shard_pattern(n_shards: int) -> str:
    """The output shards' names as one brace pattern, e.g. `{00000..00012}.tar` ("" for none)."""
    if n_shards == 0:
        return ""
    if n_shards == 1:
        return "00000.tar"
    return f"{{00000..{n_shards - 1:05d}}}.tar"


def brace_pattern(out_dir: str, n_shards: int) -> str:
    """What a training job passes as its shard list, e.g. `out/{00000..00012}.tar`."""
    return f"{out_dir}/{shard_pattern(n_shards)}" if n_shards else ""


def passed_steps(cfg: RunConfig) -> list[str]:
    """The run's enabled steps: every one of them kept each exported sample."""
    return [name for name in cfg.steps if getattr(getattr(cfg, name, None), "enabled", True)]


def kept_samples(ctx: RunContext) -> DataFrame:
    """The alive samples with the columns export needs: source location, caption, the cluster id and
    CLIP score when those stages ran (else null), the passed steps, and the embeddings if asked."""
    kept = alive_df(ctx).select(*EXPORT_COLUMNS)
    if "cluster" in ctx.fingerprints:
        from pipeline.stages.cluster import assignments_df

        kept = kept.join(assignments_df(ctx).select("sample_id", "cluster_id"), "sample_id", "left")
    else:
        kept = kept.withColumn("cluster_id", F.lit(None).cast("int"))
    emb_columns = ["clip_score", *(["image_emb", "text_emb"] if ctx.cfg.export.include_embeddings else [])]
    if "embed" in ctx.fingerprints:
        kept = kept.join(embeddings_df(ctx).select("sample_id", *emb_columns), "sample_id", "left")
    else:
        kept = kept.withColumn("clip_score", F.lit(None).cast("float"))
    passed = F.array(*(F.lit(name) for name in passed_steps(ctx.cfg))).cast("array<string>")
    return kept.withColumn("passed", passed)


def order_columns(ctx: RunContext) -> list[Column]:
    """The output order: seeded shuffle, source order, or grouped by cluster (seeded inside)."""
    order = ctx.cfg.export.order
    shuffled = F.sha2(F.concat(F.lit(f"{ctx.cfg.seed}:"), F.col("sample_id")), 256)
    if order == "source":
        return [F.col("sample_id")]
    if order == "cluster":
        return [F.col("cluster_id").asc_nulls_last(), shuffled, F.col("sample_id")]
    return [shuffled, F.col("sample_id")]


def task_row(row: Row) -> dict[str, Any]:
    """A kept sample as the dict a shard task gets; embeddings as float32 arrays (compact to ship)."""
    out = row.asDict()
    for name in ("image_emb", "text_emb"):
        if out.get(name) is not None:
            out[name] = np.asarray(out[name], dtype=np.float32)
    return out


class Export(Stage):
    """Kept samples -> `export/{00000..}.tar` + `.parquet` + `_stats.json`, `sizes.json`, `manifest.json`."""

    name = "export"
    seeded = True  # order: shuffle and cluster

    def execute(self, ctx: RunContext, out_dir: str) -> dict[str, Any]:
        cfg = ctx.cfg.export
        sc = ctx.spark.sparkContext
        sc.setJobDescription("export: order kept samples")
        rows = kept_samples(ctx).orderBy(*order_columns(ctx)).rdd.map(task_row).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            pairs, n_shards = assign_shards(rows.zipWithIndex(), cfg.samples_per_shard, cfg.max_shard_bytes)
            sc.setJobDescription(f"export: write {n_shards} shards")
            started = time.monotonic()
            stats = run_grouped(pairs, n_shards, lambda shard, members: write_shard_task(out_dir, shard, members))
        finally:
            rows.unpersist()
        stop_if_source_changed(out_dir, stats)
        kept = sum(s["count"] for s in stats)
        seconds = time.monotonic() - started
        log.info("export: %d samples in %d shards, %.1f samples/s", kept, n_shards, kept / max(seconds, 1e-9))
        io.write_json_atomic(f"{out_dir}/sizes.json", {s["shard"]: s["count"] for s in stats})
        input_fp = ctx.manifest("ingest")["input_fingerprint"]
        manifest = output_manifest(stats, shard_pattern(n_shards), ctx.cfg, input_fp, ctx.fingerprints)
        io.write_json_atomic(f"{out_dir}/manifest.json", manifest)
        return {
            "kept": kept,
            "shards": stats,
            "bytes": manifest["bytes"],
            "pattern": brace_pattern(out_dir, n_shards),
        }
