"""Perceptual dedup: samples whose 64-bit pHashes are within `phash_dedup.threshold` bits (and, by
default, whose aspect ratios differ by at most `max_aspect_change`) are linked (banding in Spark,
pipeline/dedup/phash.py); of each connected group the smallest sample_id stays.

Groups are connected components over the linked pairs of distinct nodes ((phash, aspect) values),
resolved on the driver (scipy) from the edge list only: at most `max_edges` pairs, else the stage
stops with an error naming the key (a threshold that links that much of a pool is not finding
near-duplicates). Samples sharing a node are one group without an edge. Linking is transitive, so a
removed sample's distance to the kept one (its `score`) can exceed the threshold along a chain.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from pipeline.core.config import ConfigError, RunConfig
from pipeline.core.decisions import DecisionStage, write_decisions
from pipeline.core.stage import RunContext
from pipeline.core.tables import alive_df
from pipeline.dedup.phash import aspect_key, hamming, hash_pairs, node_groups

STAGE = "phash_dedup"


def group_table(ctx: RunContext, pairs: DataFrame, keys: list[str], max_edges: int) -> tuple[DataFrame, int]:
    """((*keys, group_<key>...) for every node that has a linked pair, the group being the smallest
    node of its component; the number of such nodes). At most `max_edges` pairs reach the driver."""
    edges = pairs.select(*[f"{k}_{side}" for side in "ab" for k in keys]).limit(max_edges + 1).toPandas()
    if len(edges) > max_edges:
        raise ConfigError(
            f"config key '{STAGE}.max_edges': more than {max_edges} linked hash pairs; lower "
            f"{STAGE}.threshold or raise the limit (the pairs are grouped on the driver)"
        )
    nodes, groups = node_groups(edges[[f"{k}_a" for k in keys]].to_numpy(), edges[[f"{k}_b" for k in keys]].to_numpy())
    table = pd.DataFrame({**{k: nodes[:, i] for i, k in enumerate(keys)},
                          **{f"group_{k}": groups[:, i] for i, k in enumerate(keys)}})
    schema = ", ".join(f"{name} long" for name in table.columns)
    return ctx.spark.createDataFrame(table, schema), len(nodes)


class PhashDedup(DecisionStage):
    """Removes every sample of a pHash group but the smallest sample_id; `score` is its Hamming
    distance to the kept sample, which the decision names."""

    name = STAGE
    score_labels = {"near_duplicate": "pHash Hamming distance to the kept copy (bits)"}

    def thresholds(self, cfg: RunConfig) -> dict[str, float]:
        return {"near_duplicate": cfg.phash_dedup.threshold}

    def execute(self, ctx: RunContext, out_dir: str) -> dict[str, Any]:
        cfg = ctx.cfg.phash_dedup
        keys = ["phash"] if cfg.max_aspect_change is None else ["phash", "aspect"]
        sc = ctx.spark.sparkContext
        rows = (alive_df(ctx).where(F.col("phash").isNotNull())
                .select("sample_id", "uid", "phash", aspect_key(F.col("width"), F.col("height")).alias("aspect")))
        sc.setJobDescription(f"{STAGE}: hash pairs within {cfg.threshold} bits")
        found = hash_pairs(rows, None, cfg.threshold, cfg.max_bucket, cfg.max_aspect_change)
        groups, linked = group_table(ctx, found.pairs, keys, cfg.max_edges)
        oversized = found.oversized.agg(F.count("*").alias("n"), F.sum("size").alias("nodes")).first()
        group = [F.coalesce(f"group_{k}", k) for k in keys]
        by_group = Window.partitionBy(*group).orderBy("sample_id")
        decisions = (
            rows.join(groups, keys, "left")
            .withColumn("rank", F.row_number().over(by_group))
            .withColumn("matched_sample_id", F.first("sample_id").over(by_group))
            .withColumn("matched_uid", F.first("uid").over(by_group))
            .withColumn("kept_phash", F.first("phash").over(by_group))
            .where("rank > 1")
            .withColumn("stage", F.lit(self.name))
            .withColumn("reason", F.lit("near_duplicate"))
            .withColumn("score", hamming(F.col("phash"), F.col("kept_phash")).cast("double"))
        )
        sc.setJobDescription(f"{STAGE}: decide")
        return {
            "removed": write_decisions(ctx, decisions, out_dir),
            "linked_nodes": linked,
            "oversized_buckets": int(oversized["n"]),
            "oversized_bucket_nodes": int(oversized["nodes"] or 0),
        }
