"""DFN-style filtering (Fang et al., "Data Filtering Networks"): a filtering network, any open_clip
model configured in `dfn.model` independently of the embedding model, scores every pair by the
cosine of its image and caption embeddings; the best-scored pairs are kept.

Scoring reuses the embed stage's per-shard task (`encode_alive`): one Spark task per source shard
writes `dfn/scores/parts/<shard>.parquet` (SCORES) then `dfn/scores/shard_stats/<shard>.json`, and an
interrupted attempt keeps its finished shards. Without `dfn.model` the score is the embed stage's
clip_score, which makes this DataComp's CLIP-score filter.

Keep rule: `threshold` (score >= threshold), or `top_fraction` f / the `keep_count` best of the scored
pool (raised by a `budget`, see pipeline/prune/keep.py):
- `quantile: exact`: a distributed sort by (score desc, sample_id asc) and exact ranks; exactly
  ceil(f * N) samples are kept, ties at the cut broken by sample_id.
- `quantile: approximate`: Spark's approxQuantile (Greenwald-Khanna) gives a cut value whose rank
  is within relative_error * N of the exact one; samples scoring >= the cut are kept, so the kept
  count is within +-relative_error * N of the target (plus any samples tied with the cut value).
  One pass, no global sort.
Alive samples without a score (no embedding) are left alive and counted as `unscored`.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.core.config import RunConfig
from pipeline.core.stage import RunContext
from pipeline.core.tables import embeddings_df, scores_df
from pipeline.prune.keep import log_plan, plan_keep
from pipeline.prune.select import beyond_rank, decisions
from pipeline.prune.step import PruneStep
from pipeline.embedding.shards import EncodeSettings, encode_alive
from schemas import SCORES

log = logging.getLogger("curate")

REASON = "dfn_low_score"


def scores_table(rows: list[dict[str, Any]], out: Any) -> pa.Table:
    """SCORES rows from an encoded shard: the filtering network's image-caption cosine."""
    return pa.table({"sample_id": [r["sample_id"] for r in rows], "uid": [r["uid"] for r in rows],
                     "score": out.clip_score}, schema=SCORES)


class Dfn(PruneStep):
    """Removes pairs scored below the threshold or outside the top fraction, with reason
    `dfn_low_score`, score = the filtering score."""

    name = "dfn"
    score_labels = {REASON: "image-caption cosine of the filtering network"}
    resumable = True  # the per-shard scores of an interrupted attempt are kept

    writes = ("scores",)

    def reads_in(self, cfg: RunConfig) -> tuple[str, ...]:
        return ("pool",) if cfg.dfn.model is not None else ("pool", "embeddings")

    def thresholds(self, cfg: RunConfig) -> dict[str, float]:
        """The threshold the scores are compared with, when it is fixed in the config."""
        return {REASON: cfg.dfn.threshold} if cfg.dfn.threshold is not None else {}

    def kept_scores(self, ctx: RunContext, kept: DataFrame) -> dict[str, DataFrame]:
        """The kept samples' filtering scores."""
        return {REASON: self.scores(ctx).join(kept.select("sample_id"), "sample_id", "left_semi")}

    def scores(self, ctx: RunContext) -> DataFrame:
        """(sample_id, score): the filtering network's scores, or the embed stage's clip_score."""
        if ctx.cfg.dfn.model is not None:
            return scores_df(ctx).select("sample_id", "score")
        return embeddings_df(ctx).select("sample_id", F.col("clip_score").alias("score"))

    def prune(self, alive: DataFrame, ctx: RunContext, out_dir: str) -> tuple[DataFrame, dict[str, Any]]:
        cfg = ctx.cfg.dfn
        counts: dict[str, Any] = {}
        if cfg.model is not None:
            counts["scoring"] = encode_alive(ctx, alive, f"{out_dir}/scores", EncodeSettings.of(cfg, self.name),
                                             scores_table)
        scores = self.scores(ctx)
        pool = alive.select("sample_id", "uid").join(scores.select("sample_id", "score"), "sample_id") \
            .where(F.col("score").isNotNull())
        n_pool = pool.count()
        counts["unscored"] = alive.count() - n_pool
        if cfg.threshold is not None:
            removed = pool.where(F.col("score") < F.lit(cfg.threshold))
            counts["threshold"] = cfg.threshold
        else:
            plan = plan_keep(n_pool, cfg.top_fraction, cfg.keep_count, cfg.budget)
            log_plan(self.name, plan)
            counts["keep"] = plan.counts()
            if cfg.quantile == "exact":
                removed = beyond_rank(pool, plan.n_keep, [F.col("score").desc(), F.col("sample_id").asc()])
            elif plan.n_keep == 0:
                removed = pool
            else:
                cut = pool.approxQuantile("score", [1.0 - plan.n_keep / n_pool], cfg.relative_error)[0]
                counts["threshold"] = cut
                removed = pool.where(F.col("score") < F.lit(cut))
                log.info("%s: approximate cut %.6f (relative error %g: kept count within +-%d of %d)", self.name,
                         cut, cfg.relative_error, int(cfg.relative_error * n_pool), plan.n_keep)
        return decisions(removed, self.name, REASON, F.col("score")), counts
