"""SemDeDup step: one pandas task per concept cluster (`groupBy(cluster_id).applyInPandas`) over the
cluster stage's assignments joined with the embeddings of the samples still alive; the algorithm is
`pipeline.dedup.semdedup.semdedup_cluster`. Samples without the embedding `semdedup.on` needs are
not compared (counted as `no_embedding`)."""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from typing import Any

from pyspark.sql import functions as F

from pipeline.core.config import RunConfig
from pipeline.core.decisions import DecisionStage, write_decisions
from pipeline.core.stage import RunContext, alive_df, embeddings_df
from pipeline.dedup.semdedup import REASON, STAGE, semdedup_cluster
from pipeline.stages.cluster import assignments_df
from schemas import DECISIONS, spark_schema

EMBEDDING_COLUMNS = {"image": ["image_emb"], "text": ["text_emb"], "image+text": ["image_emb", "text_emb"]}


class SemDedup(DecisionStage):
    """Removes samples whose cosine to an earlier sample of their cluster (in keep order) exceeds
    1 - eps; the decision names that sample and scores the cosine."""

    name = STAGE
    needs = ("embed", "cluster")

    def config_json(self, cfg: RunConfig) -> str:
        # keep: random is seeded by the run seed
        return json.dumps({"semdedup": dataclasses.asdict(cfg.semdedup), "seed": cfg.seed}, sort_keys=True)

    def thresholds(self, cfg: RunConfig) -> dict[str, float]:
        return {REASON: 1.0 - cfg.semdedup.eps}

    def execute(self, ctx: RunContext, out_dir: str) -> dict[str, Any]:
        cfg = ctx.cfg.semdedup
        columns = EMBEDDING_COLUMNS[cfg.on]
        rows = (
            assignments_df(ctx).select("sample_id", "cluster_id", "dist_to_centroid")
            .join(alive_df(ctx).select("sample_id"), "sample_id", "left_semi")
            .join(embeddings_df(ctx).select("sample_id", "uid", *columns), "sample_id")
        )
        complete = F.lit(True)
        for col in columns:
            complete = complete & F.col(col).isNotNull()
        body = partial(semdedup_cluster, cfg=cfg, seed=ctx.cfg.seed)
        decisions = rows.where(complete).groupBy("cluster_id").applyInPandas(body, spark_schema(DECISIONS))
        ctx.spark.sparkContext.setJobDescription(f"{STAGE}: clusters (eps {cfg.eps}, keep {cfg.keep}, on {cfg.on})")
        removed = write_decisions(ctx, decisions, out_dir)
        return {"removed": removed, "compared": rows.where(complete).count(),
                "no_embedding": rows.where(~complete).count()}
