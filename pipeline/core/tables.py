"""The catalog of a run's tables: which stage writes each, where in its folder, with which schema,
and how to read it back. Every stage and report reads earlier outputs through here, so no module
needs the module of the stage that wrote a table."""

from __future__ import annotations

import io as pyio
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame

import schemas
from pipeline.core import io
from pipeline.core.context import RunContext


@dataclass(frozen=True)
class Table:
    """A Parquet table of the run: `<run_dir>/<stage>/<folder>/`, rows of `schema`."""

    name: str
    stage: str
    folder: str
    schema: pa.Schema


SAMPLES = Table("samples", "ingest", "parts", schemas.SAMPLES)
EMBEDDINGS = Table("embeddings", "embed", "parts", schemas.EMBEDDINGS)
CENTROIDS = Table("centroids", "cluster", "centroids", schemas.CENTROIDS)
ASSIGNMENTS = Table("assignments", "cluster", "assignments", schemas.ASSIGNMENTS)
CLUSTER_STATS = Table("cluster_stats", "cluster", "cluster_stats", schemas.CLUSTER_STATS)
SCORES = Table("scores", "dfn", "scores/parts", schemas.SCORES)
CENTROIDS_NPY = "centroids.npy"  # in the cluster stage's folder: float32 [K, d], unit norm


def decisions_table(stage: str) -> Table:
    """The DECISIONS rows a decision stage wrote."""
    return Table(f"{stage}.decisions", stage, "decisions", schemas.DECISIONS)


def path(ctx: RunContext, table: Table) -> str:
    return f"{ctx.stage_dir(table.stage)}/{table.folder}"


def read(ctx: RunContext, table: Table) -> DataFrame:
    """`table` as a DataFrame with its declared schema."""
    return ctx.spark.read.schema(schemas.spark_schema(table.schema)).parquet(path(ctx, table))


def table_df(ctx: RunContext, stage: str, folder: str, schema: pa.Schema) -> DataFrame:
    """A table written by a stage, read with its declared schema (for a stage's own side tables)."""
    return read(ctx, Table(folder, stage, folder, schema))


def samples_df(ctx: RunContext) -> DataFrame:
    """The ingest table (every input row, quarantined ones included)."""
    return read(ctx, SAMPLES)


def decisions_df(ctx: RunContext, stage: str) -> DataFrame:
    """The samples a decision stage removed, with reasons."""
    return read(ctx, decisions_table(stage))


def embeddings_df(ctx: RunContext) -> DataFrame:
    """Image and text embeddings of the samples that reached the embed stage."""
    return read(ctx, EMBEDDINGS)


def centroids_df(ctx: RunContext) -> DataFrame:
    """CENTROIDS: (cluster_id, centroid)."""
    return read(ctx, CENTROIDS)


def assignments_df(ctx: RunContext) -> DataFrame:
    """ASSIGNMENTS: (sample_id, uid, cluster_id, dist_to_centroid = 1 - cos), one row per embedding."""
    return read(ctx, ASSIGNMENTS)


def cluster_stats_df(ctx: RunContext) -> DataFrame:
    """CLUSTER_STATS: one row per cluster (empty ones too: size 0, null distances)."""
    return read(ctx, CLUSTER_STATS)


def scores_df(ctx: RunContext) -> DataFrame:
    """The filtering network's scores written by the dfn stage."""
    return read(ctx, SCORES)


def centroids(ctx: RunContext) -> np.ndarray:
    """The trained centroids, float32 [K, d], unit norm; row i is cluster_id i."""
    fs, p = io.filesystem(f"{ctx.stage_dir(CENTROIDS.stage)}/{CENTROIDS_NPY}")
    with fs.open(p, "rb") as f:
        return np.load(pyio.BytesIO(f.read()), allow_pickle=False)


def alive_df(ctx: RunContext) -> DataFrame:
    """Usable samples that no finished decision stage has removed yet."""
    alive = samples_df(ctx).where("quarantine_reason IS NULL")
    for stage in ctx.decision_stages:
        alive = alive.join(decisions_df(ctx, stage).select("sample_id"), "sample_id", "left_anti")
    return alive
