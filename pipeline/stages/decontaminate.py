"""Decontamination: remove pool samples that match an evaluation-set image.

The eval sets are read and hashed on the driver (pipeline/dedup/eval_sets.py) and, for the semantic
method, embedded there with the embed stage's model; they are written to `eval_samples/`
(EVAL_SAMPLES). Against the alive pool, in Spark:

- exact: same sha256 uid (a join with the small eval table);
- phash: pHash within `phash_threshold` bits (the banding join of pipeline/dedup/phash.py);
- semantic: image-embedding cosine >= `cosine_threshold` to the nearest eval image (a FAISS flat
  index over the eval embeddings, broadcast to mapInArrow tasks).

`matches/` (EVAL_MATCHES) lists every pool sample each method matched, with its best eval sample
(exact: smallest eval_id; phash: smallest distance, then eval_id; semantic: highest cosine). A sample
matched by several methods gets one decision, from the first of exact, phash, semantic: reason
`eval_<method>`, matched_sample_id = the eval id, matched_uid = the eval image's uid.
"""

from __future__ import annotations

import logging
from functools import reduce
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from pipeline.core import io
from pipeline.core.config import DecontaminateConfig, RunConfig
from pipeline.core.decisions import DecisionStage, write_decisions
from pipeline.core.stage import RunContext
from pipeline.core.tables import alive_df, embeddings_df, table_df
from pipeline.dedup.eval_sets import EvalImage, embed_images, eval_set_files, eval_table, read_eval_set
from pipeline.dedup.nearest import MATCHES, write_nearest
from pipeline.dedup.phash import hash_pairs
from schemas import EVAL_MATCHES, EVAL_SAMPLES

log = logging.getLogger("curate")

STAGE = "decontaminate"
METHODS = ("exact", "phash", "semantic")  # decision priority


def _best(matches: DataFrame, method: str, *order) -> DataFrame:
    """The first row per pool sample in `order`, as EVAL_MATCHES columns with `method`."""
    first = Window.partitionBy("sample_id").orderBy(*order)
    return (matches.withColumn("_rank", F.row_number().over(first)).where("_rank = 1")
            .withColumn("method", F.lit(method)).select(*EVAL_MATCHES.names))


def exact_matches(pool: DataFrame, evals: DataFrame) -> DataFrame:
    """Pool samples with the bytes of an eval image."""
    joined = pool.join(evals.select(F.col("uid"), "eval_id", F.col("uid").alias("eval_uid")), "uid")
    return _best(joined.withColumn("score", F.lit(None).cast("double")), "exact", "eval_id")


def phash_matches(pool: DataFrame, evals: DataFrame, cfg: DecontaminateConfig) -> DataFrame:
    """Pool samples whose pHash is within the threshold of an eval image's."""
    pairs = hash_pairs(pool, evals, cfg.phash_threshold, cfg.max_bucket).pairs
    joined = (
        pool.join(pairs.withColumnRenamed("phash_a", "phash"), "phash")
        .join(evals.select(F.col("phash").alias("phash_b"), "eval_id", F.col("uid").alias("eval_uid")), "phash_b")
        .withColumn("score", F.col("distance").cast("double"))
    )
    return _best(joined, "phash", "distance", "eval_id")


def semantic_matches(ctx: RunContext, pool: DataFrame, images: list[EvalImage], embeddings: np.ndarray,
                     cfg: DecontaminateConfig, scratch: str) -> DataFrame:
    """Pool samples whose image embedding has cosine >= the threshold to an eval image's."""
    queries = pool.select("sample_id").join(embeddings_df(ctx).select("sample_id", "image_emb"), "sample_id")
    write_nearest(queries, embeddings, cfg.cosine_threshold, scratch)
    ref = ctx.spark.createDataFrame([(i, im.eval_id, im.uid) for i, im in enumerate(images)],
                                    "ref_index int, eval_id string, eval_uid string")
    joined = (ctx.spark.read.schema(MATCHES).parquet(scratch).join(F.broadcast(ref), "ref_index")
              .join(pool.select("sample_id", "uid"), "sample_id")
              .withColumn("score", F.col("cos").cast("double")))
    return _best(joined, "semantic", F.desc("score"), "eval_id")


class Decontaminate(DecisionStage):
    """Removes pool samples matching an eval-set image; see the module doc."""

    name = STAGE
    score_labels = {"eval_exact": "no score (same bytes as an eval image)",
                    "eval_phash": "pHash Hamming distance to the eval image (bits)",
                    "eval_semantic": "image cosine to the eval image"}

    def reads_in(self, cfg: RunConfig) -> tuple[str, ...]:
        return ("pool", "embeddings") if "semantic" in cfg.decontaminate.methods else ("pool",)

    def thresholds(self, cfg: RunConfig) -> dict[str, float]:
        return {"eval_phash": cfg.decontaminate.phash_threshold, "eval_semantic": cfg.decontaminate.cosine_threshold}

    def external_files(self, cfg: RunConfig) -> list[str]:
        return [path for spec in cfg.decontaminate.eval_sets for path in eval_set_files(spec)]

    def execute(self, ctx: RunContext, out_dir: str) -> dict[str, Any]:
        cfg = ctx.cfg.decontaminate
        images, unusable = [], 0
        for spec in cfg.eval_sets:
            found, bad = read_eval_set(spec, ctx.cfg.ingest)
            images += found
            unusable += bad
        semantic = "semantic" in cfg.methods and len(images) > 0
        embeddings = embed_images(images, ctx.cfg.embed.model, cfg.batch_size) if semantic else None
        io.write_parquet_atomic(f"{out_dir}/eval_samples/part-00000.parquet", eval_table(images, embeddings))
        log.info("%s: %d eval images (%d unusable) from %d set(s)", STAGE, len(images), unusable, len(cfg.eval_sets))

        evals = table_df(ctx, STAGE, "eval_samples", EVAL_SAMPLES)
        pool = alive_df(ctx).select("sample_id", "uid", "phash")
        found: list[DataFrame] = []
        if "exact" in cfg.methods:
            found.append(exact_matches(pool, evals))
        if "phash" in cfg.methods:
            found.append(phash_matches(pool.where(F.col("phash").isNotNull()), evals, cfg))
        if semantic:
            found.append(semantic_matches(ctx, pool, images, embeddings, cfg, f"{out_dir}/_semantic"))
        ctx.spark.sparkContext.setJobDescription(f"{STAGE}: match against {len(images)} eval images")
        matches = reduce(DataFrame.unionByName, found) if found else None
        if matches is not None:
            matches.write.mode("overwrite").parquet(f"{out_dir}/matches")
        else:
            io.write_parquet_atomic(f"{out_dir}/matches/part-00000.parquet", EVAL_MATCHES.empty_table())
        io.remove(f"{out_dir}/_semantic")

        written = table_df(ctx, STAGE, "matches", EVAL_MATCHES)
        priority = F.array_position(F.array(*[F.lit(m) for m in METHODS]), F.col("method"))
        first = Window.partitionBy("sample_id").orderBy(priority)
        decisions = (
            written.withColumn("_rank", F.row_number().over(first)).where("_rank = 1")
            .select("sample_id", "uid", F.lit(self.name).alias("stage"),
                    F.concat(F.lit("eval_"), "method").alias("reason"), "score",
                    F.col("eval_uid").alias("matched_uid"), F.col("eval_id").alias("matched_sample_id"))
        )
        matched = {r["method"]: r["count"] for r in written.groupBy("method").count().collect()}
        return {
            "removed": write_decisions(ctx, decisions, out_dir),
            "eval_images": len(images),
            "eval_unusable": unusable,
            "matches": {m: matched.get(m, 0) for m in cfg.methods},
        }
