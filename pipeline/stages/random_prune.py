"""Random baselines: keep a uniform random subset of the pool, or (`balance: cluster`) the same
number of samples from every cluster (n_keep / K each, capped by the cluster's size, what a small
cluster cannot use redistributed over the others; exact integers by largest remainders).

The order is a seeded hash of sample_id (xxhash64 with the run seed; ties by sample_id), so the
subset is exactly the requested size and the same for any partitioning."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.core.config import RunConfig
from pipeline.core.stage import RunContext
from pipeline.prune.allocate import balanced_quotas
from pipeline.prune.keep import log_plan, plan_keep
from pipeline.prune.select import beyond_quota, beyond_rank, clustered_pool, decisions, group_sizes, seeded_hash
from pipeline.prune.step import PruneStep


class RandomPrune(PruneStep):
    """Removes the samples not drawn with reason `random_pruned` (no score)."""

    name = "random"
    score_labels = {"random_pruned": "no score (a seeded draw)"}
    seeded = True

    def reads_in(self, cfg: RunConfig) -> tuple[str, ...]:
        return ("pool", "assignments") if cfg.random.balance == "cluster" else ("pool",)

    def prune(self, alive: DataFrame, ctx: RunContext, out_dir: str) -> tuple[DataFrame, dict[str, Any]]:
        cfg = ctx.cfg.random
        order = [seeded_hash(ctx.cfg.seed).asc(), F.col("sample_id").asc()]
        if cfg.balance == "cluster":
            pool = clustered_pool(ctx, alive)
            ids, sizes = group_sizes(pool, "cluster_id")
            plan = plan_keep(int(sizes.sum()), cfg.keep_fraction, cfg.keep_count, cfg.budget)
            quotas = balanced_quotas(sizes, plan.n_keep)
            removed = beyond_quota(pool, "cluster_id", dict(zip(ids.tolist(), quotas.tolist())), order)
            extra = {"clusters": len(ids), "unassigned": alive.count() - plan.pool}
        else:
            pool = alive.select("sample_id", "uid")
            plan = plan_keep(pool.count(), cfg.keep_fraction, cfg.keep_count, cfg.budget)
            removed = beyond_rank(pool, plan.n_keep, order)
            extra = {}
        log_plan(self.name, plan)
        counts = {"keep": plan.counts(), "balance": cfg.balance, **extra}
        return decisions(removed, self.name, "random_pruned", None), counts
