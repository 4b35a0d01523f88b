"""Embed: open_clip image and caption embeddings, one Spark task per source shard.

A task reads its shard's image bytes straight from the tar (offsets from ingest), decodes and
preprocesses on threads ahead of the forward pass, and writes `parts/<shard>.parquet` then
`shard_stats/<shard>.json`; a rerun embeds only shards without a stats file. The model is loaded
once per Python worker and reused by later tasks. A task bound to a GPU by Spark's resource
scheduling (`spark.task.resource.gpu.amount`) runs there; otherwise it runs on the CPU with as
many torch threads as the task has cores.
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
from pipeline.core.config import RunConfig
from pipeline.core.decisions import no_decisions, write_decisions
from pipeline.core.model_spec import ModelSpec
from pipeline.core.progress import RateLogger
from pipeline.core.stage import RunContext, Stage, alive_df
from pipeline.core.tars import raise_if_source_changed, read_source_images, report_source_changed
from pipeline.core.tasks import run_grouped
from schemas import EMBEDDINGS

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


def embeddings_table(rows: list[dict[str, Any]], out: EncodedBatch) -> pa.Table:
    """EMBEDDINGS rows: both embeddings and their cosine."""
    return pa.table(
        {
            "sample_id": [r["sample_id"] for r in rows],
            "uid": [r["uid"] for r in rows],
            "image_emb": list(out.image_emb),
            "text_emb": list(out.text_emb),
            "clip_score": out.clip_score,
        },
        schema=EMBEDDINGS,
    )


def encode_shard(shard: str, rows: list[dict[str, Any]], out_dir: str, settings: EncodeSettings,
                 make_table: TableMaker) -> dict[str, Any]:
    """Task body: encode one shard's rows and write `parts/<shard>.parquet`, then its stats (skip
    the shard if its stats file exists)."""
    from pipeline.models import encode_pairs, get_clip, select_device, set_torch_threads

    part = shard.replace("/", "__")
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


class Embed(Stage):
    """Alive samples -> `embed/parts/*.parquet` (EMBEDDINGS); samples that get no embedding are
    removed with reason `no_embedding` (only possible with precomputed embeddings)."""

    name = "embed"
    resumable = True
    removes_samples = True

    def external_files(self, cfg: RunConfig) -> list[str]:
        if cfg.embed.precomputed is None:
            return super().external_files(cfg)
        fs, root = io.filesystem(cfg.embed.precomputed)
        return sorted(io.with_protocol(fs, path, cfg.embed.precomputed) for path in fs.find(root))

    def execute(self, ctx: RunContext, out_dir: str) -> dict[str, Any]:
        cfg = ctx.cfg.embed
        alive = alive_df(ctx)
        if cfg.precomputed is not None:
            from pipeline.stages.embed_import import import_precomputed

            return import_precomputed(ctx, alive, out_dir)
        counts = encode_alive(ctx, alive, out_dir, EncodeSettings.of(cfg, self.name), embeddings_table)
        write_decisions(ctx, no_decisions(ctx), out_dir)
        return {"embedded": counts["encoded"], "shards": counts["shards"], "images_per_s": counts["images_per_s"],
                "removed": {}}
