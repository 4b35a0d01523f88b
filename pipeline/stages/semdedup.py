"""SemDeDup step: one pandas task per concept cluster (`groupBy(cluster_id).applyInPandas`) over the
cluster stage's assignments joined with the embeddings of the samples still alive; the algorithm is
`pipeline.dedup.semdedup.semdedup_cluster`. Samples without the embedding `semdedup.on` needs are
not compared (counted as `no_embedding`)."""

from __future__ import annotations

from functools import partial
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.core.config import RunConfig, SemDedupConfig
from pipeline.core.decisions import DecisionStage, write_decisions
from pipeline.core.stage import RunContext
from pipeline.core.tables import alive_df, assignments_df, embeddings_df
from pipeline.dedup.semdedup import EMBEDDING_COLUMNS, REASON, STAGE, semdedup_cluster
from pipeline.prune.keep import log_plan, plan_keep
from pipeline.prune.select import beyond_rank
from schemas import DECISIONS, spark_schema


class SemDedup(DecisionStage):
    """Removes samples whose cosine to an earlier sample of their cluster (in keep order) exceeds
    1 - eps; the decision names that sample and scores the cosine."""

    name = STAGE
    score_labels = {REASON: "cosine to the closest earlier sample of the cluster"}
    reads = ("pool", "embeddings", "assignments")
    seeded = True  # keep: random

    def thresholds(self, cfg: RunConfig) -> dict[str, float]:
        return {} if keep_target(cfg.semdedup) else {REASON: 1.0 - cfg.semdedup.eps}

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
        target = keep_target(cfg)
        body = partial(semdedup_cluster, cfg=cfg, seed=ctx.cfg.seed, every=target)
        decisions = rows.where(complete).groupBy("cluster_id").applyInPandas(body, spark_schema(DECISIONS))
        tally = rows.agg(F.count("*").alias("rows"), F.count(F.when(complete, 1)).alias("compared")).first()
        compared = tally["compared"]
        counts: dict[str, Any] = {"compared": compared, "no_embedding": tally["rows"] - compared}
        candidates = decisions.persist() if target else None
        if candidates is not None:
            decisions, counts["keep"], counts["eps_equivalent"] = cut_to_target(candidates, compared, cfg)
        rule = f"keep {counts['keep']['n_keep']}" if target else f"eps {cfg.eps}"
        ctx.spark.sparkContext.setJobDescription(f"{STAGE}: clusters ({rule}, keep {cfg.keep}, on {cfg.on})")
        counts["removed"] = write_decisions(ctx, decisions, out_dir)
        if candidates is not None:
            candidates.unpersist()
        return counts


def keep_target(cfg: SemDedupConfig) -> bool:
    """A keep_fraction or keep_count is set (eps then follows from it)."""
    return cfg.keep_fraction is not None or cfg.keep_count is not None


def cut_to_target(candidates: DataFrame, compared: int, cfg: SemDedupConfig) -> tuple[DataFrame, dict, float]:
    """Of the candidates (every compared sample but the first of each cluster, scored by its cosine
    to an earlier sample), the ones to remove so that the keep target of the `compared` samples is
    kept: the highest scores, ties by sample_id. Returns them, the keep plan's counts and the largest
    eps that gives the same cut (1 - the highest kept score; 1.0 when no candidate is kept)."""
    plan = plan_keep(compared, cfg.keep_fraction, cfg.keep_count)
    log_plan(STAGE, plan)
    firsts = compared - candidates.count()  # never removed: nothing earlier to be a duplicate of
    kept_candidates = max(0, plan.n_keep - firsts)
    order = [F.col("score").asc(), F.col("sample_id").asc()]
    cut = candidates.orderBy(*order).limit(kept_candidates).agg(F.max("score")).first()[0]
    return beyond_rank(candidates, kept_candidates, order), plan.counts(), 1.0 - cut if cut is not None else 1.0
