"""SSP pruning (Sorscher et al., "Beyond neural scaling laws"): the most prototypical samples, the
closest to their cluster centroid, are the easiest and are removed first. `scope: global` ranks the
whole pool by distance; `scope: cluster` keeps the same fraction of every cluster (quotas
proportional to the cluster sizes, summing exactly to the keep count)."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.core.stage import RunContext
from pipeline.prune.allocate import proportional_quotas
from pipeline.prune.keep import log_plan, plan_keep
from pipeline.prune.select import (
    beyond_quota, beyond_rank, centroid_distances, clustered_pool, decisions, group_sizes,
)
from pipeline.prune.step import PruneStep


class Ssp(PruneStep):
    """Keeps the samples farthest from their centroid (ties: smaller sample_id); removes the rest
    with reason `ssp_prototypical`, score = dist_to_centroid."""

    name = "ssp"
    score_labels = {"ssp_prototypical": "distance to the cluster centroid (1 - cosine)"}

    def kept_scores(self, ctx: RunContext, kept: DataFrame) -> dict[str, DataFrame]:
        """The kept samples' distances to their centroid."""
        return {"ssp_prototypical": centroid_distances(ctx, kept)}
    reads = ("pool", "assignments")

    def prune(self, alive: DataFrame, ctx: RunContext, out_dir: str) -> tuple[DataFrame, dict[str, Any]]:
        cfg = ctx.cfg.ssp
        pool = clustered_pool(ctx, alive)
        ids, sizes = group_sizes(pool, "cluster_id")
        plan = plan_keep(int(sizes.sum()), cfg.keep_fraction, cfg.keep_count, cfg.budget)
        log_plan(self.name, plan)
        order = [F.col("dist_to_centroid").desc(), F.col("sample_id").asc()]
        if cfg.scope == "cluster":
            quotas = proportional_quotas(sizes, plan.n_keep)
            removed = beyond_quota(pool, "cluster_id", dict(zip(ids.tolist(), quotas.tolist())), order)
        else:
            removed = beyond_rank(pool, plan.n_keep, order)
        counts = {"keep": plan.counts(), "scope": cfg.scope, "unassigned": alive.count() - plan.pool}
        return decisions(removed, self.name, "ssp_prototypical", F.col("dist_to_centroid")), counts
