"""Export: the kept samples' original image bytes re-sharded into WebDataset tars + Parquet.

A resharder: the kept rows are sorted in Spark and travel to the shard tasks as Arrow (never
pickled row by row); one Spark task per output shard reads its images straight from the source
tars at the offsets ingest recorded, grouped by tar and offset so each tar is read forward in few
large reads (`pipeline.core.source_reads`), checks their sha256, and writes `{i:05d}.tar`, `{i:05d}.parquet`, then
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

import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipeline.core import io
from pipeline.core.config import RunConfig
from pipeline.core.progress import RateLogger
from pipeline.core.source_reads import ImageRefs, iter_images
from pipeline.core.stage import RunContext, Stage
from pipeline.core.tables import alive_df, assignments_df, embeddings_df
from pipeline.core.tars import raise_if_source_changed, report_source_changed
from pipeline.core.tasks import run_grouped_tables
from pipeline.export.layout import INDEX, plan_layout, with_positions
from pipeline.export.manifest import output_manifest
from pipeline.export.uid_lists import write_uid_lists
from schemas import EXPORT_ROWS, spark_schema

log = logging.getLogger("curate")

EXPORT_COLUMNS = ["sample_id", "uid", "shard", "shard_name", "key", "caption", "url", "width", "height", "image_ext",
                  "image_offset", "image_bytes", "source"]


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


OUTPUT_FIELDS = [name for name in EXPORT_ROWS.names if name not in ("image_emb", "text_emb")]


def output_table(keys: list[str], rows: pa.Table) -> pa.Table:
    """The EXPORT_ROWS table of a shard's kept samples (rows in output order, their keys)."""
    renamed = {"key": pa.array(keys, pa.string()), "source_shard": rows.column("shard_name"),
               "orig_key": rows.column("key")}
    columns = []
    for field in EXPORT_ROWS:
        if field.name in renamed:
            column = renamed[field.name]
        elif field.name in rows.column_names:
            column = rows.column(field.name)
        else:
            column = pa.nulls(rows.num_rows, field.type)
        columns.append(column.cast(field.type))
    return pa.Table.from_arrays(columns, schema=EXPORT_ROWS).combine_chunks()


def json_member(record: dict[str, Any]) -> bytes:
    """A sample's .json member: its EXPORT_ROWS record, with `source` as an object."""
    return json.dumps({**record, "source": json.loads(record["source"] or "{}")}, sort_keys=True).encode()


def image_refs(rows: pa.Table) -> ImageRefs:
    """Where the images of `rows` (kept samples) are in their source tars."""
    return ImageRefs(*(rows.column(name).to_pylist() for name in ("shard", "image_offset", "image_bytes", "uid",
                                                                   "sample_id")))


def write_shard(out_dir: str, shard: int, rows: pa.Table) -> dict[str, Any]:
    """Write one output shard from its kept samples (with their global output index); return its stats.

    The images are read grouped by source tar and offset (`iter_images`), and written in output order.
    """
    name = f"{shard:05d}"
    rows = rows.sort_by(INDEX)
    table = output_table([f"{i:09d}" for i in rows.column(INDEX).to_pylist()], rows)
    records = table.select(OUTPUT_FIELDS).to_pylist()
    progress = RateLogger(f"export {name}.tar", len(records), unit="samples")
    fs, tar_path = io.filesystem(f"{out_dir}/{name}.tar")
    with fs.open(tar_path + ".tmp", "wb") as raw:
        sink = _HashingWriter(raw)
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.GNU_FORMAT) as tar:
            for record, image in zip(records, iter_images(image_refs(rows)), strict=True):
                key = record["key"]
                _add(tar, f"{key}.{record['image_ext']}", image)
                _add(tar, f"{key}.txt", (record["caption"] or "").encode())
                _add(tar, f"{key}.json", json_member(record))
                progress(1)
    fs.mv(tar_path + ".tmp", tar_path)
    io.write_parquet_atomic(f"{out_dir}/{name}.parquet", table)
    stats = {"shard": f"{name}.tar", "count": len(records), "bytes": sink.size, "sha256": sink.sha.hexdigest()}
    io.write_json_atomic(f"{out_dir}/{name}_stats.json", stats)
    return stats


def write_shard_task(out_dir: str, shard: int, rows: pa.Table) -> dict[str, Any]:
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
    """The run's steps: every one of them kept each exported sample."""
    return list(cfg.steps)


def kept_samples(ctx: RunContext) -> DataFrame:
    """The alive samples with the columns export needs: source location, caption, the cluster id and
    CLIP score when those stages ran (else null), the passed steps, and the embeddings if asked."""
    kept = alive_df(ctx).select(*EXPORT_COLUMNS)
    if "cluster" in ctx.fingerprints:
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


class Export(Stage):
    """Kept samples -> `export/{00000..}.tar` + `.parquet` + `_stats.json`, `sizes.json`, `manifest.json`."""

    name = "export"
    reads = ("pool",)  # and the assignments and embeddings when cluster and embed are in the run
    seeded = True  # order: shuffle and cluster

    def execute(self, ctx: RunContext, out_dir: str) -> dict[str, Any]:
        cfg = ctx.cfg.export
        sc = ctx.spark.sparkContext
        sc.setJobDescription("export: order kept samples")
        positioned = with_positions(kept_samples(ctx).orderBy(*order_columns(ctx)))
        positioned = positioned.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            layout = plan_layout(positioned, cfg.samples_per_shard, cfg.max_shard_bytes)
            n_shards = layout.n_shards
            sc.setJobDescription(f"export: write {n_shards} shards")
            started = time.monotonic()
            stats = run_grouped_tables(positioned, n_shards, lambda shard, rows: write_shard_task(out_dir, shard, rows),
                                       assign=layout.assign)
        finally:
            positioned.unpersist()
        stop_if_source_changed(out_dir, stats)
        kept = sum(s["count"] for s in stats)
        seconds = time.monotonic() - started
        log.info("export: %d samples in %d shards, %.1f samples/s", kept, n_shards, kept / max(seconds, 1e-9))
        io.write_json_atomic(f"{out_dir}/sizes.json", {s["shard"]: s["count"] for s in stats})
        input_fp = ctx.manifest("ingest")["input_fingerprint"]
        manifest = output_manifest(stats, shard_pattern(n_shards), ctx.cfg, input_fp,
                                   {name: ctx.fingerprints[name] for name in ctx.earlier()})
        io.write_json_atomic(f"{out_dir}/manifest.json", manifest)
        paths = [f"{out_dir}/{s['shard'][: -len('.tar')]}.parquet" for s in stats]
        schema = spark_schema(EXPORT_ROWS)
        exported = ctx.spark.read.schema(schema).parquet(*paths) if paths else ctx.spark.createDataFrame([], schema)
        sc.setJobDescription("export: uid lists")
        return {
            "uid_lists": write_uid_lists(exported, out_dir),
            "kept": kept,
            "shards": stats,
            "bytes": manifest["bytes"],
            "pattern": brace_pattern(out_dir, n_shards),
        }
