"""Export: the kept samples' original image bytes re-sharded into WebDataset tars + Parquet.

One Spark task per output shard reads each image straight from its source tar at the offset ingest
recorded (checking its sha256), and writes `{i:05d}.tar`, `{i:05d}.parquet`, then
`{i:05d}_stats.json`. `sizes.json` (read by open_clip's loader) is written once all shards exist.
"""

from __future__ import annotations

import hashlib
import io as pyio
import json
import math
import tarfile
from typing import Any, BinaryIO

import pyarrow as pa
from pyspark.sql import functions as F

from pipeline.core import io
from pipeline.core.stage import RunContext, Stage, alive_df
from pipeline.core.tars import read_member
from pipeline.core.tasks import run_grouped
from schemas import EXPORT_ROWS

EXPORT_COLUMNS = ["sample_id", "uid", "shard", "shard_name", "key", "caption", "url", "width", "height", "image_ext",
                  "image_offset", "image_bytes"]


class SourceChanged(RuntimeError):
    """A source tar no longer holds the bytes ingest saw."""


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


def _read_image(handles: dict[str, BinaryIO], row: dict[str, Any]) -> bytes:
    path = row["shard"]
    if path not in handles:
        fs, p = io.filesystem(path)
        handles[path] = fs.open(p, "rb")
    data = read_member(handles[path], row["image_offset"], row["image_bytes"])
    if hashlib.sha256(data).hexdigest() != row["uid"]:
        raise SourceChanged(f"{path}: bytes of {row['key']} changed since ingest")
    return data


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
    }


def write_shard(out_dir: str, shard: int, rows: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """Write one output shard from (global index, sample row) pairs; return its stats."""
    name = f"{shard:05d}"
    records = []
    handles: dict[str, BinaryIO] = {}
    fs, tar_path = io.filesystem(f"{out_dir}/{name}.tar")
    try:
        with fs.open(tar_path + ".tmp", "wb") as raw:
            sink = _HashingWriter(raw)
            with tarfile.open(fileobj=sink, mode="w|", format=tarfile.GNU_FORMAT) as tar:
                for index, row in sorted(rows, key=lambda r: r[0]):
                    key = f"{index:09d}"
                    record = output_row(key, row)
                    _add(tar, f"{key}.{row['image_ext']}", _read_image(handles, row))
                    _add(tar, f"{key}.txt", (row["caption"] or "").encode())
                    _add(tar, f"{key}.json", json.dumps(record, sort_keys=True).encode())
                    records.append(record)
    finally:
        for h in handles.values():
            h.close()
    fs.mv(tar_path + ".tmp", tar_path)
    io.write_parquet_atomic(f"{out_dir}/{name}.parquet", pa.Table.from_pylist(records, schema=EXPORT_ROWS))
    stats = {"shard": f"{name}.tar", "count": len(records), "bytes": sink.size, "sha256": sink.sha.hexdigest()}
    io.write_json_atomic(f"{out_dir}/{name}_stats.json", stats)
    return stats


def brace_pattern(out_dir: str, n_shards: int) -> str:
    """What a training job passes as its shard list, e.g. `out/{00000..00012}.tar`."""
    if n_shards == 0:
        return ""
    if n_shards == 1:
        return f"{out_dir}/00000.tar"
    return f"{out_dir}/{{00000..{n_shards - 1:05d}}}.tar"


class Export(Stage):
    """Kept samples -> `export/{00000..}.tar` + `.parquet` + `_stats.json`, `sizes.json`."""

    name = "export"

    def execute(self, ctx: RunContext, out_dir: str) -> dict[str, Any]:
        cfg = ctx.cfg.export
        kept = alive_df(ctx).select(*EXPORT_COLUMNS)
        if cfg.order == "shuffle":
            order = F.sha2(F.concat(F.lit(f"{ctx.cfg.seed}:"), F.col("sample_id")), 256)
        else:
            order = F.col("sample_id")
        ordered = kept.withColumn("_order", order).orderBy("_order", "sample_id").drop("_order")
        ctx.spark.sparkContext.setJobDescription("export: order kept samples")
        indexed = ordered.rdd.map(lambda r: r.asDict()).zipWithIndex()
        total = indexed.count()
        per_shard = cfg.samples_per_shard
        n_shards = math.ceil(total / per_shard)
        ctx.spark.sparkContext.setJobDescription(f"export: write {n_shards} shards")
        pairs = indexed.map(lambda ri: (ri[1] // per_shard, (ri[1], ri[0])))
        stats = run_grouped(pairs, n_shards, lambda shard, rows: write_shard(out_dir, shard, rows))
        io.write_json_atomic(f"{out_dir}/sizes.json", {s["shard"]: s["count"] for s in stats})
        pattern = brace_pattern(out_dir, n_shards)
        return {
            "kept": sum(s["count"] for s in stats),
            "shards": stats,
            "bytes": sum(s["bytes"] for s in stats),
            "pattern": pattern,
        }

