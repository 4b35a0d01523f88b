"""Encoding with an open_clip model in work units, shared by the embed stage, DFN scoring and the
image-based filter's target set.

A unit is whole batches of one shard's rows in offset order; the work is cut into at least
`MIN_UNITS` units (where there are enough batches), so cores stay busy whatever the number of
shards. A task reads its unit's image bytes straight from the tar (offsets from ingest, in one
forward read), decodes and preprocesses on threads ahead of the forward pass, and writes
`parts/<shard>-<first row>.parquet` then `shard_stats/<same>.json`; a rerun encodes only units
without a stats file. The model package (torch, open_clip) is imported inside the task body only,
so the driver and tasks that encode nothing never pay for importing torch; the model is loaded once
per Python worker process and reused by every later task there. A task bound to a GPU by Spark's
resource scheduling (`spark.task.resource.gpu.amount`: one task, so one process, per GPU) runs
batches of `batch_size` in fp16 with pinned-memory transfers while as many threads as the task has
cores decode; otherwise it runs on the CPU with as many torch threads as the task has cores and
batches of at most `CPU_BATCH_SIZE`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pyspark import TaskContext
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from pipeline.core import io
from pipeline.core.context import RunContext
from pipeline.core.model_spec import ModelSpec
from pipeline.core.progress import RateLogger
from pipeline.core.source_reads import ImageRefs, iter_images
from pipeline.core.tars import raise_if_source_changed, report_source_changed
from pipeline.core.tasks import GROUP, run_grouped_tables

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


MIN_UNITS = 64  # the work is cut into at least this many units (where there are enough batches)
CPU_BATCH_SIZE = 32  # batches are capped here on the CPU: larger ones gain nothing and make units coarse


@dataclass(frozen=True)
class WorkUnit:
    """Consecutive rows of one shard (in image offset order) from row `start`: whole batches."""

    shard: str
    start: int

    @property
    def part_name(self) -> str:
        return f"{io.part_name(self.shard)}-{self.start:07d}"


def unit_rows(total: int, batch_size: int) -> int:
    """Rows per work unit for `total` rows: whole batches, as large as leaves at least MIN_UNITS
    units. It depends on the data alone, so a resumed attempt cuts the same units on any cluster."""
    return batch_size * max(1, total // (MIN_UNITS * batch_size))


def task_batch_size(spark_conf: Any, batch_size: int) -> int:
    """The batch size of encoding tasks: `batch_size` when Spark gives tasks GPUs, else at most
    CPU_BATCH_SIZE."""
    gpu_tasks = float(spark_conf.get("spark.task.resource.gpu.amount", "0") or 0) > 0
    return batch_size if gpu_tasks else min(batch_size, CPU_BATCH_SIZE)


def encode_unit(unit: WorkUnit, rows: pa.Table, out_dir: str, settings: EncodeSettings,
                make_table: TableMaker) -> dict[str, Any]:
    """Task body: encode one work unit's rows and write `parts/<shard>-<start>.parquet`, then its
    stats (skip the unit if its stats file exists)."""
    # torch and open_clip are imported only where images are encoded (slow to import, heavy)
    from pipeline.models import encode_pairs, get_clip, select_device, set_torch_threads

    stats_path = f"{out_dir}/shard_stats/{unit.part_name}.json"
    if io.exists(stats_path):
        return io.read_json(stats_path)
    gpus, cores = _task_resources()
    device = select_device(gpus)
    if device.type == "cpu":
        set_torch_threads(settings.threads or cores)
    clip = get_clip(settings.model, device)
    rows = rows.sort_by("image_offset")
    started = time.monotonic()
    progress = RateLogger(f"{settings.label} {unit.shard}+{unit.start} on {device}", rows.num_rows)
    refs = ImageRefs(*(rows.column(c).to_pylist() for c in ("shard", "image_offset", "image_bytes", "uid", "sample_id")))
    out = encode_pairs(
        clip,
        iter_images(refs),
        [caption or "" for caption in rows.column("caption").to_pylist()],
        batch_size=settings.batch_size,
        decode_workers=settings.decode_workers if device.type == "cpu" else max(settings.decode_workers, cores),
        progress=progress,
    )
    io.write_parquet_atomic(f"{out_dir}/parts/{unit.part_name}.parquet",
                            make_table(rows.select(["sample_id", "uid"]).to_pylist(), out))
    seconds = time.monotonic() - started
    stats = {"shard": unit.shard, "start": unit.start, "count": rows.num_rows, "seconds": round(seconds, 3),
             "device": str(device), "images_per_s": round(rows.num_rows / max(seconds, 1e-9), 1)}
    io.write_json_atomic(stats_path, stats)
    return stats


def encode_alive(ctx: RunContext, alive: DataFrame, out_dir: str, settings: EncodeSettings,
                 make_table: TableMaker) -> dict[str, Any]:
    """Encode `alive` (SAMPLES rows) into `out_dir/parts/`, one Spark task per work unit: whole
    batches of one shard's rows in offset order, at least MIN_UNITS units where the batches allow,
    so a shard's tail never leaves cores idle. Units finished by an interrupted attempt are kept.
    Returns counts for the manifest."""
    rows = alive.select(*EMBED_COLUMNS)
    settings = replace(settings, batch_size=task_batch_size(ctx.spark.sparkContext.getConf(), settings.batch_size))
    counts = sorted((r["shard_name"], r["count"]) for r in rows.groupBy("shard_name").count().collect())
    per_unit = unit_rows(sum(n for _, n in counts), settings.batch_size)
    units, first_unit = [], []
    for shard, n in counts:
        first_unit.append((shard, len(units)))
        units.extend(WorkUnit(shard, start) for start in range(0, n, per_unit))
    ctx.spark.sparkContext.setJobDescription(f"{settings.label}: encode {len(counts)} shards in {len(units)} units")
    started = time.monotonic()
    rank = F.row_number().over(Window.partitionBy("shard_name").orderBy("image_offset")) - 1
    bases = ctx.spark.createDataFrame(first_unit, "shard_name string, _first int")
    grouped = rows.join(F.broadcast(bases), "shard_name").withColumn(
        GROUP, (F.col("_first") + F.floor(rank / per_unit)).cast("int")).drop("_first")
    stats = run_grouped_tables(grouped, len(units), lambda i, members: report_source_changed(
        units[i].part_name, lambda: encode_unit(units[i], members, out_dir, settings, make_table)))
    raise_if_source_changed(f"{settings.label} stopped (units encoded so far are kept)", stats)
    seconds = time.monotonic() - started
    encoded = sum(s["count"] for s in stats)
    return {"encoded": encoded, "shards": len(counts), "units": len(stats),
            "images_per_s": round(encoded / max(seconds, 1e-9), 1)}
