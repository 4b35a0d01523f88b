"""Dataset containment (`curate contain A B`): how much of dataset A is already in dataset B.

Both datasets (img2dataset shards) are read by the ingest stage into scratch run folders under the
output folder (`runs/<hash of the input>`; resumable and reused by later calls on the same input),
and embedded there by the embed stage when the config gives `embed.model`. A usable sample of A is
contained in B at each level when B has a usable sample with:

- exact: the same image bytes (sha256 uid);
- perceptual: a pHash within `phash_threshold` bits (banding join, pipeline/dedup/phash.py);
- semantic: an image embedding with cosine >= `cosine_threshold` (FAISS over B, broadcast to tasks
  in chunks of `chunk_rows` rows of B, one pass per chunk, so B need not fit in one broadcast).

A sample contained exactly is contained perceptually and semantically too (same bytes, same hash and
embedding). Quarantined samples of either dataset take no part. Output: `containment_by_shard.parquet`
(CONTAINMENT_BY_SHARD, one row per shard of A) and `containment.json` (the totals and settings).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.cluster.kmeans import vectors_from_arrow
from pipeline.core import io
from pipeline.core.config import ConfigError, RunConfig, config_from_dict
from pipeline.core.runner import run_until
from pipeline.core.spark import get_spark, require_hadoop_filesystem
from pipeline.core.stage import RunContext
from pipeline.core.tables import embeddings_df, samples_df
from pipeline.dedup.nearest import MATCHES, write_nearest
from pipeline.dedup.phash import hash_pairs
from schemas import CONTAINMENT_BY_SHARD

LEVELS = ("exact", "perceptual", "semantic")


@dataclass
class Containment:
    """The measured containment of A in B."""

    summary: dict[str, Any]  # containment.json
    by_shard: pa.Table  # CONTAINMENT_BY_SHARD


def scratch_config(input_spec: str, out_dir: str, config: str | None) -> RunConfig:
    """The run config that ingests (and embeds) `input_spec` into `out_dir/runs/<hash>`: the
    settings of `config` (spark, ingest, embed) when given, with no steps."""
    run_dir = f"{out_dir.rstrip('/')}/runs/{hashlib.sha256(input_spec.encode()).hexdigest()[:16]}"
    data: dict[str, Any] = {}
    if config is not None:
        if not Path(config).is_file():
            raise ConfigError(f"config file '{config}' does not exist")
        data = yaml.safe_load(Path(config).read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file '{config}': the config must be a mapping")
    embed = data.get("embed") if isinstance(data.get("embed"), dict) else {}
    embed = {**embed, "enabled": embed.get("model") is not None}  # embedded when a model is set
    return config_from_dict({**data, "embed": embed, "input": input_spec, "run_dir": run_dir, "steps": []})


def prepare(cfg: RunConfig, semantic: bool) -> RunContext:
    """Ingest (and embed) one dataset; finished stages are skipped."""
    require_hadoop_filesystem(get_spark(cfg.spark), cfg.run_dir, "--out")
    return run_until(cfg, "embed" if semantic else "ingest")


def _usable(ctx: RunContext) -> DataFrame:
    return samples_df(ctx).where("quarantine_reason IS NULL")


def embedding_chunks(ctx: RunContext, rows: int) -> Iterator[np.ndarray]:
    """B's image embeddings (nulls skipped), read on the driver `rows` at a time."""
    fs, root = io.filesystem(f"{ctx.stage_dir('embed')}/parts")
    pending: list[np.ndarray] = []
    held = 0
    for path in sorted(fs.glob(f"{root}/*.parquet")):
        with fs.open(path, "rb") as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=min(rows, 65_536), columns=["image_emb"]):
                column = batch.column(0).drop_null()
                if len(column) == 0:
                    continue
                pending.append(vectors_from_arrow(column))
                held += len(column)
                if held >= rows:
                    block = np.concatenate(pending)
                    yield block[:rows]
                    pending, held = [block[rows:]], held - rows
    if held:
        yield np.concatenate(pending)


def semantic_hits(a: RunContext, b: RunContext, threshold: float, scratch: str,
                  chunk_rows: int) -> tuple[DataFrame, int]:
    """(sample_id of A's samples whose nearest image of B has cosine >= `threshold`, passes over B)."""
    queries = _usable(a).select("sample_id").join(embeddings_df(a).select("sample_id", "image_emb"), "sample_id")
    io.remove(scratch)
    paths = []
    for i, chunk in enumerate(embedding_chunks(b, chunk_rows)):
        a.spark.sparkContext.setJobDescription(f"contain: semantic pass {i + 1}")
        paths.append(f"{scratch}/pass-{i:05d}")
        write_nearest(queries, chunk, threshold, paths[-1])
    if not paths:
        return a.spark.createDataFrame([], "sample_id string"), 0
    return a.spark.read.schema(MATCHES).parquet(*paths).select("sample_id").distinct(), len(paths)


def measure_containment(a_spec: str, b_spec: str, out_dir: str, config: str | None = None,
                        phash_threshold: int = 4, cosine_threshold: float = 0.95, max_bucket: int = 5000,
                        chunk_rows: int = 250_000) -> Containment:
    """Measure, write and return the containment of dataset A (`a_spec`) in dataset B (`b_spec`).
    The semantic level is measured only when `config` sets embed.model (else null)."""
    started = time.time()
    cfg_a, cfg_b = scratch_config(a_spec, out_dir, config), scratch_config(b_spec, out_dir, config)
    semantic = cfg_a.embed.model is not None
    a, b = prepare(cfg_a, semantic), prepare(cfg_b, semantic)
    rows_a, rows_b = _usable(a).select("shard_name", "sample_id", "uid", "phash"), _usable(b).select("uid", "phash")

    hits = {
        "exact": rows_a.join(rows_b.select("uid"), "uid", "left_semi").select("sample_id"),
        "perceptual": rows_a.join(
            hash_pairs(rows_a, rows_b, phash_threshold, max_bucket).pairs.select(F.col("phash_a").alias("phash")),
            "phash", "left_semi").select("sample_id"),
    }
    passes = None
    if semantic:
        hits["semantic"], passes = semantic_hits(a, b, cosine_threshold, f"{out_dir.rstrip('/')}/_semantic",
                                                 chunk_rows)
    flagged = rows_a.select("shard_name", "sample_id")
    for level, found in hits.items():
        flagged = flagged.join(found.distinct().withColumn(level, F.lit(1)), "sample_id", "left")
    a.spark.sparkContext.setJobDescription("contain: per shard")
    counts = (flagged.groupBy("shard_name")
              .agg(F.count("*").alias("samples"), *[F.count(level).alias(level) for level in hits])
              .orderBy("shard_name").toPandas())
    io.remove(f"{out_dir.rstrip('/')}/_semantic")

    by_shard = _by_shard_table(counts, semantic)
    totals = {"samples": int(counts["samples"].sum())}
    for level in LEVELS:
        n = int(counts[level].sum()) if level in counts else None
        totals[level] = n
        totals[f"{level}_fraction"] = None if n is None or totals["samples"] == 0 else n / totals["samples"]
    summary = {
        "a": a_spec, "b": b_spec, **totals,
        "b_samples": rows_b.count(),
        "phash_threshold": phash_threshold,
        "cosine_threshold": cosine_threshold if semantic else None,
        "model": cfg_a.embed.model.arch if semantic else None,
        "semantic_passes": passes,
        "seconds": round(time.time() - started, 3),
    }
    io.write_parquet_atomic(f"{out_dir.rstrip('/')}/containment_by_shard.parquet", by_shard)
    io.write_json_atomic(f"{out_dir.rstrip('/')}/containment.json", summary)
    return Containment(summary, by_shard)


def _by_shard_table(counts: Any, semantic: bool) -> pa.Table:
    samples = counts["samples"].to_numpy(dtype=np.int64)
    columns: dict[str, Any] = {"shard": counts["shard_name"].tolist(), "samples": samples}
    for level in LEVELS:
        if level == "semantic" and not semantic:
            columns[level] = pa.nulls(len(counts), pa.int64())
            columns[f"{level}_fraction"] = pa.nulls(len(counts), pa.float64())
            continue
        n = counts[level].to_numpy(dtype=np.int64)
        columns[level] = n
        columns[f"{level}_fraction"] = n / np.maximum(samples, 1)
    return pa.table({name: columns[name] for name in CONTAINMENT_BY_SHARD.names}, schema=CONTAINMENT_BY_SHARD)


def format_table(result: Containment) -> str:
    """The per-shard fractions and the total, as a plain-text table."""
    def fmt(value: float | None) -> str:
        return f"{value:>10.4f}" if value is not None else f"{'-':>10}"

    lines = [f"{'shard':<24}{'samples':>9}{'exact':>10}{'perceptual':>11}{'semantic':>10}"]
    for r in result.by_shard.to_pylist():
        lines.append(f"{r['shard']:<24}{r['samples']:>9}{fmt(r['exact_fraction'])}"
                     f" {fmt(r['perceptual_fraction'])}{fmt(r['semantic_fraction'])}")
    s = result.summary
    lines.append(f"{'all':<24}{s['samples']:>9}{fmt(s['exact_fraction'])} {fmt(s['perceptual_fraction'])}"
                 f"{fmt(s['semantic_fraction'])}")
    return "\n".join(lines)
