"""Spark helpers shared by the pruning steps: the pool a step chooses from, exact global ranks,
per-group quotas, and the decision rows of the samples not kept."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline.core.context import RunContext
from pipeline.core.tables import assignments_df

RANK = "_rank"


def clustered_pool(ctx: RunContext, alive: DataFrame) -> DataFrame:
    """Alive samples that have a cluster assignment: (sample_id, uid, cluster_id, dist_to_centroid).
    Alive samples without one (no image embedding) are not part of any clustered step's pool."""
    assigned = assignments_df(ctx).select("sample_id", "cluster_id", "dist_to_centroid")
    return alive.select("sample_id", "uid").join(assigned, "sample_id")


def centroid_distances(ctx: RunContext, samples: DataFrame) -> DataFrame:
    """(sample_id, score = dist_to_centroid) of the `samples` (sample_id, uid) that have a cluster."""
    return clustered_pool(ctx, samples).select("sample_id", F.col("dist_to_centroid").alias("score"))


def with_global_rank(df: DataFrame, order: Sequence[Column]) -> DataFrame:
    """`df` plus `_rank` (0-based, long): each row's exact position in `order` over the whole table.

    A distributed sort (range partitioned), then, in the JVM: one small job counts the rows of each
    sorted partition, and every row gets its partition's offset (the counts before it, a literal
    map) plus its place in the partition (monotonically_increasing_id holds it in its low 33 bits).
    Only one count per partition reaches the driver; no row goes through Python. `order` must be
    total (end with a unique column) for ranks to be deterministic."""
    part = F.spark_partition_id()
    place = F.monotonically_increasing_id() - F.shiftleft(part.cast("long"), 33)
    ordered = df.orderBy(*order)
    counts = dict(ordered.groupBy(part.alias("p")).count().collect())
    offsets, total = {}, 0
    for p in sorted(counts):
        offsets[p], total = total, total + counts[p]
    offset = F.create_map(*(F.lit(v) for p in sorted(offsets) for v in (p, offsets[p]))) if offsets else None
    rank = (offset[part] + place) if offset is not None else place
    return ordered.withColumn(RANK, rank.cast("long"))


def beyond_rank(df: DataFrame, n_keep: int, order: Sequence[Column]) -> DataFrame:
    """The rows of `df` after the first `n_keep` in `order` (exactly |df| - n_keep rows)."""
    return with_global_rank(df, order).where(F.col(RANK) >= n_keep).drop(RANK)


def beyond_quota(df: DataFrame, group: str, quotas: dict[int, int], order: Sequence[Column]) -> DataFrame:
    """The rows of `df` after the first quotas[g] of their group g in `order` (groups not in
    `quotas` keep nothing)."""
    spark = df.sparkSession
    quota_df = spark.createDataFrame([(int(g), int(q)) for g, q in quotas.items()],
                                     T.StructType([T.StructField(group, df.schema[group].dataType),
                                                   T.StructField("_quota", T.LongType())]))
    window = Window.partitionBy(group).orderBy(*order)
    return (
        df.withColumn(RANK, F.row_number().over(window))
        .join(F.broadcast(quota_df), group, "left")
        .where(F.col(RANK) > F.coalesce(F.col("_quota"), F.lit(0)))
        .drop(RANK, "_quota")
    )


def group_sizes(df: DataFrame, group: str) -> tuple[np.ndarray, np.ndarray]:
    """(group ids ascending, row counts), for the groups present in `df`."""
    rows = sorted((r[group], r["count"]) for r in df.groupBy(group).count().collect())
    return np.array([g for g, _ in rows], dtype=np.int64), np.array([c for _, c in rows], dtype=np.int64)


def decisions(removed: DataFrame, stage: str, reason: str, score: Column | None) -> DataFrame:
    """DECISIONS rows for `removed` (which has sample_id and uid)."""
    return removed.select(
        "sample_id",
        "uid",
        F.lit(stage).alias("stage"),
        F.lit(reason).alias("reason"),
        (score.cast("double") if score is not None else F.lit(None).cast("double")).alias("score"),
        F.lit(None).cast("string").alias("matched_uid"),
        F.lit(None).cast("string").alias("matched_sample_id"),
    )


def seeded_hash(seed: int, column: str = "sample_id") -> Column:
    """A seeded 64-bit hash of `column`: a random order that any partitioning reproduces."""
    return F.xxhash64(F.lit(str(seed)), F.col(column))
