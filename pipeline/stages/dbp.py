"""Density-based pruning (Abbas et al., "Effective pruning of web-scale datasets based on
complexity of concept clusters"): clusters that are spread out (high d_intra) and close to other
clusters (high d_inter) are harder concepts and keep more of their samples.

Complexity is recomputed over the samples still alive at this step, not taken from
`cluster/cluster_stats` (which covers every embedded sample): earlier steps (dedup above all, which
the paper runs first) change each cluster's size and spread, and the quotas must fit the pool the
step actually chooses from (|C_j| is an upper bound). d_inter depends on the centroids only and comes
from cluster_stats. Distances are summed as integers (units of 2**-32, as in the cluster stage), so
d_intra does not depend on partitioning. The quotas are written to `dbp/quotas/` (DBP_QUOTAS).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.cluster.kmeans import DIST_SCALE
from pipeline.core import io
from pipeline.core.stage import RunContext
from pipeline.core.tables import cluster_stats_df
from pipeline.prune.allocate import dbp_min_quota, dbp_quotas, softmax
from pipeline.prune.keep import log_plan, plan_keep
from pipeline.prune.select import beyond_quota, centroid_distances, clustered_pool, decisions
from pipeline.prune.step import PruneStep
from schemas import DBP_QUOTAS


def pool_cluster_stats(ctx: RunContext, pool: DataFrame) -> pd.DataFrame:
    """Per cluster present in `pool`: cluster_id, size, d_intra (exact mean of dist_to_centroid over
    the pool's samples), d_inter (from cluster_stats); sorted by cluster_id."""
    qdist = F.round(F.col("dist_to_centroid").cast("double") * DIST_SCALE).cast("decimal(38,0)")
    sums = pool.groupBy("cluster_id").agg(F.count("*").alias("size"), F.sum(qdist).alias("qsum"))
    rows = sums.join(cluster_stats_df(ctx).select("cluster_id", "d_inter"), "cluster_id", "left").collect()
    rows = sorted(rows, key=lambda r: r["cluster_id"])
    return pd.DataFrame({
        "cluster_id": np.array([r["cluster_id"] for r in rows], dtype=np.int32),
        "size": np.array([r["size"] for r in rows], dtype=np.int64),
        "d_intra": np.array([int(r["qsum"]) / (r["size"] * DIST_SCALE) for r in rows], dtype=np.float64),
        "d_inter": np.array([np.nan if r["d_inter"] is None else r["d_inter"] for r in rows], dtype=np.float64),
    })


class Dbp(PruneStep):
    """Keeps N_j of each cluster j (the farthest from its centroid; ties: smaller sample_id);
    removes the rest with reason `dbp_pruned`, score = dist_to_centroid."""

    name = "dbp"
    score_labels = {"dbp_pruned": "distance to the cluster centroid (1 - cosine)"}

    def kept_scores(self, ctx: RunContext, kept: DataFrame) -> dict[str, DataFrame]:
        """The kept samples' distances to their centroid."""
        return {"dbp_pruned": centroid_distances(ctx, kept)}
    reads = ("pool", "assignments", "cluster_stats")

    def prune(self, alive: DataFrame, ctx: RunContext, out_dir: str) -> tuple[DataFrame, dict[str, Any]]:
        cfg = ctx.cfg.dbp
        pool = clustered_pool(ctx, alive)
        stats = pool_cluster_stats(ctx, pool)
        plan = plan_keep(int(stats["size"].sum()), cfg.keep_fraction, cfg.keep_count, cfg.budget)
        log_plan(self.name, plan)
        complexity = (stats["d_intra"] * stats["d_inter"].fillna(0.0)).to_numpy()
        quotas = dbp_quotas(stats["size"].to_numpy(), complexity, plan.n_keep, cfg.tau, cfg.min_share)
        table = pa.table({
            **{c: stats[c].to_numpy() for c in ("cluster_id", "size", "d_intra")},
            "d_inter": pa.array(stats["d_inter"].to_numpy(), pa.float64(), from_pandas=True),
            "complexity": complexity,
            "target": softmax(complexity, cfg.tau) * plan.n_keep,
            "quota": quotas,
        }, schema=DBP_QUOTAS)
        io.write_parquet_atomic(f"{out_dir}/quotas/part-00000.parquet", table)
        removed = beyond_quota(pool, "cluster_id", dict(zip(stats["cluster_id"].tolist(), quotas.tolist())),
                               [F.col("dist_to_centroid").desc(), F.col("sample_id").asc()])
        counts = {
            "keep": plan.counts(),
            "clusters": len(stats),
            "min_quota": dbp_min_quota(plan.n_keep, len(stats), cfg.min_share),
            "unassigned": alive.count() - plan.pool,
        }
        return decisions(removed, self.name, "dbp_pruned", F.col("dist_to_centroid")), counts
