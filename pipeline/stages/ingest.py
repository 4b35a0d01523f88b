"""Ingest: one Spark task per img2dataset tar -> one Parquet of samples per shard.

Each task reads its shard with `pipeline.core.shard_reader` and writes `parts/<shard>.parquet` then
`shard_stats/<shard>.json` last, so an interrupted run redoes only the shards without a stats file
(`parts/` holds Parquet only, for any reader).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pyarrow as pa

from pipeline.core import io
from pipeline.core.config import IngestConfig
from pipeline.core.shard_reader import ShardTask, read_shard, shard_tasks
from pipeline.core.stage import RunContext, Stage
from schemas import SAMPLES

log = logging.getLogger("curate")


def ingest_shard(task: ShardTask, out_dir: str, cfg: IngestConfig) -> dict[str, Any]:
    """Spark task body: write the shard's Parquet, then its stats file; skip if the stats exist."""
    stats_path = f"{out_dir}/shard_stats/{task.part_name}.json"
    if io.exists(stats_path):
        return io.read_json(stats_path)
    rows, stats = read_shard(task, cfg)
    io.write_parquet_atomic(f"{out_dir}/parts/{task.part_name}.parquet", pa.Table.from_pylist(rows, schema=SAMPLES))
    io.write_json_atomic(stats_path, stats)
    if stats["tar_error"] or stats["parquet_error"]:
        log.warning("ingest %s: %s", task.name, {k: stats[k] for k in ("tar_error", "parquet_error")})
    return stats


class Ingest(Stage):
    """img2dataset shards -> `ingest/parts/*.parquet` (the SAMPLES table)."""

    name = "ingest"
    writes = ("samples",)
    resumable = True

    def tasks(self, ctx: RunContext) -> list[ShardTask]:
        return shard_tasks(ctx.cfg.input)

    def input_fingerprint(self, ctx: RunContext) -> str:
        files = []
        for task in self.tasks(ctx):
            stem = task.path[: -len(".tar")]
            files += [task.path, stem + ".parquet", stem + "_stats.json"]
        return io.fingerprint_files(files)

    def execute(self, ctx: RunContext, out_dir: str) -> dict[str, Any]:
        tasks = self.tasks(ctx)
        cfg = ctx.cfg.ingest
        sc = ctx.spark.sparkContext
        sc.setJobDescription(f"ingest {len(tasks)} shards")
        stats = sc.parallelize(tasks, len(tasks)).map(lambda t: ingest_shard(t, out_dir, cfg)).collect()
        quarantined: Counter[str] = Counter()
        for s in stats:
            quarantined.update(s["quarantined"])
        return {
            "shards": len(stats),
            "input": sum(s["input"] for s in stats),
            "ok": sum(s["ok"] for s in stats),
            "quarantined": dict(sorted(quarantined.items())),
            "tar_errors": {s["shard"]: s["tar_error"] for s in stats if s["tar_error"]},
            "parquet_errors": {s["shard"]: s["parquet_error"] for s in stats if s["parquet_error"]},
        }
