"""Per-shard encoding with an open_clip model, shared by the embed stage, DFN scoring and the
image-based filter's target set: one Spark task per source shard reads the shard's image bytes
straight from the tar (offsets from ingest), encodes them and writes `parts/<shard>.parquet` then
`shard_stats/<shard>.json`; a rerun encodes only shards without a stats file. The model package
(torch, open_clip) is imported inside the task body only, so the driver and tasks that encode
nothing never pay for importing torch. A task bound to a GPU by Spark's resource scheduling
(`spark.task.resource.gpu.amount`) runs there; otherwise on the CPU with as many torch threads as
the task has cores.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pyspark import TaskContext
from pyspark.sql import DataFrame

from pipeline.core import io
from pipeline.core.context import RunContext
from pipeline.core.model_spec import ModelSpec
from pipeline.core.progress import RateLogger
from pipeline.core.tars import raise_if_source_changed, read_source_images, report_source_changed
from pipeline.core.tasks import run_grouped

if TYPE_CHECKING:
    from pipeline.models import EncodedBatch

EMBED_COLUMNS = ["sample_id", "uid", "shard", "shard_name", "caption", "image_offset", "image_bytes"]


def _task_resources() -> tuple[list[str] | None, int]:
    """(GPU addresses Spark assigned to this task or None, CPU cores of the task)."""
    ctx = TaskContext.get()
    if ctx is None:
        return None, 1
    gpu = ctx.resources().get("gpu")
    return (list(gpu.addresses) if gpu is not None else None), max(1, ctx.cpus())


@dataclass(frozen=True)
class EncodeSettings:
    """What a per-shard encoding task needs: the open_clip model and how to run it."""

    model: ModelSpec
    batch_size: int
    decode_workers: int
    threads: int  # torch threads per task; 0 = the task's CPU cores
    label: str  # names the work in logs ("embed", "dfn")

    @classmethod
    def of(cls, section: Any, label: str) -> EncodeSettings:
        """From a config section with model, batch_size, decode_workers and threads (embed, dfn)."""
        return cls(section.model, section.batch_size, section.decode_workers, section.threads, label)


# Turns a shard's rows (in encoding order) and their encodings into the Parquet part to write.
TableMaker = Callable[[list[dict[str, Any]], "EncodedBatch"], pa.Table]


def encode_shard(shard: str, rows: list[dict[str, Any]], out_dir: str, settings: EncodeSettings,
                 make_table: TableMaker) -> dict[str, Any]:
    """Task body: encode one shard's rows and write `parts/<shard>.parquet`, then its stats (skip
    the shard if its stats file exists)."""
    # torch and open_clip are imported only where images are encoded (slow to import, heavy)
    from pipeline.models import encode_pairs, get_clip, select_device, set_torch_threads

    part = io.part_name(shard)
    stats_path = f"{out_dir}/shard_stats/{part}.json"
    if io.exists(stats_path):
        return io.read_json(stats_path)
    gpus, cores = _task_resources()
    device = select_device(gpus)
    if device.type == "cpu":
        set_torch_threads(settings.threads or cores)
    clip = get_clip(settings.model, device)
    rows = sorted(rows, key=lambda r: r["image_offset"])
    started = time.monotonic()
    progress = RateLogger(f"{settings.label} {shard} on {device}", len(rows))
    out = encode_pairs(
        clip,
        read_source_images(rows),
        [r["caption"] or "" for r in rows],
        batch_size=settings.batch_size,
        decode_workers=settings.decode_workers,
        progress=progress,
    )
    io.write_parquet_atomic(f"{out_dir}/parts/{part}.parquet", make_table(rows, out))
    seconds = time.monotonic() - started
    stats = {"shard": shard, "count": len(rows), "seconds": round(seconds, 3), "device": str(device),
             "images_per_s": round(len(rows) / max(seconds, 1e-9), 1)}
    io.write_json_atomic(stats_path, stats)
    return stats


def encode_alive(ctx: RunContext, alive: DataFrame, out_dir: str, settings: EncodeSettings,
                 make_table: TableMaker) -> dict[str, Any]:
    """Encode `alive` (SAMPLES rows) with one Spark task per source shard into `out_dir/parts/`;
    shards finished by an interrupted attempt are kept. Returns counts for the manifest."""
    rows = alive.select(*EMBED_COLUMNS)
    shards = sorted(r["shard_name"] for r in rows.select("shard_name").distinct().collect())
    index = {name: i for i, name in enumerate(shards)}
    ctx.spark.sparkContext.setJobDescription(f"{settings.label}: encode {len(shards)} shards")
    started = time.monotonic()
    pairs = rows.rdd.map(lambda r: (index[r["shard_name"]], r.asDict()))
    stats = run_grouped(pairs, len(shards), lambda i, members: report_source_changed(
        shards[i], lambda: encode_shard(shards[i], members, out_dir, settings, make_table)))
    raise_if_source_changed(f"{settings.label} stopped (shards encoded so far are kept)", stats)
    seconds = time.monotonic() - started
    encoded = sum(s["count"] for s in stats)
    return {"encoded": encoded, "shards": len(stats), "images_per_s": round(encoded / max(seconds, 1e-9), 1)}
