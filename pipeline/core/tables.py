"""The catalog of a run's tables: which stage writes each, where in its folder, with which schema,
and how to read it back. Every stage and report reads earlier outputs through here, so no module
needs the module of the stage that wrote a table."""

from __future__ import annotations

import io as pyio
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame

import schemas
from pipeline.core import io
from pipeline.core.context import SUCCESS, RunContext


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


POOL = "pool"  # the samples alive when a stage runs: usable, and kept by every earlier decision stage
CATALOG: dict[str, Table] = {t.name: t for t in (SAMPLES, EMBEDDINGS, CENTROIDS, ASSIGNMENTS, CLUSTER_STATS, SCORES)}


class MissingTable(io.InputError):
    """A stage's input table is not there (its stage has not finished) or has the wrong columns."""


def decisions_table(stage: str) -> Table:
    """The DECISIONS rows a decision stage wrote."""
    return Table(f"{stage}.decisions", stage, "decisions", schemas.DECISIONS)


def pool_table(stage: str) -> Table:
    """The samples still alive after decision stage `stage` (SAMPLES rows), written once by it."""
    return Table(f"{stage}.pool", stage, "pool", schemas.SAMPLES)


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
    """The pool of the current stage: usable samples that no earlier decision stage removed, read
    from the pool the last of them wrote (no join with earlier decisions)."""
    if not ctx.order:
        raise ValueError("a context without the run's stage list cannot tell which decisions came before: "
                         "build it with pipeline.core.stage.run_context")
    (table,) = resolve(ctx, POOL)
    return read(ctx, table) if table is not SAMPLES else samples_df(ctx).where("quarantine_reason IS NULL")


def write_pool(ctx: RunContext) -> None:
    """After decision stage `ctx.current` wrote its decisions: its pool (the pool it saw, less what
    it removed), written once for the stages after it."""
    removed = decisions_df(ctx, ctx.current).select("sample_id")
    pool = alive_df(ctx).join(removed, "sample_id", "left_anti")
    ctx.spark.sparkContext.setJobDescription(f"{ctx.current}: write the pool it keeps")
    pool.write.mode("overwrite").parquet(path(ctx, pool_table(ctx.current)))


def resolve(ctx: RunContext, name: str) -> list[Table]:
    """The stored tables that table `name` (a CATALOG name or POOL) is read from in this run."""
    if name == POOL:
        earlier = ctx.earlier_decisions()
        return [pool_table(earlier[-1]) if earlier else SAMPLES]
    if name not in CATALOG:
        raise KeyError(f"unknown table '{name}' (known: {', '.join(sorted([*CATALOG, POOL]))})")
    return [CATALOG[name]]


def _same_type(a: pa.DataType, b: pa.DataType) -> bool:
    """Equal types, list element names aside (Spark names them `element`, pyarrow `item`)."""
    if pa.types.is_list(a) and pa.types.is_list(b):
        return _same_type(a.value_type, b.value_type)
    return a == b


def check_table(ctx: RunContext, table: Table, finished: bool = True) -> None:
    """Raise MissingTable unless `table`'s stage finished (with `finished`) and its first Parquet
    file has every declared column with the declared type (one footer read: no Spark job)."""
    where = path(ctx, table)
    if finished and not io.exists(f"{ctx.stage_dir(table.stage)}/{SUCCESS}"):
        raise MissingTable(f"table '{table.name}' needs the {table.stage} stage finished in {ctx.cfg.run_dir}: "
                           f"run `curate run` (or that stage) first")
    fs, root = io.filesystem(where)
    files = sorted(fs.glob(f"{root}/*.parquet")) if fs.isdir(root) else []
    if not files:
        return  # a table with no rows (e.g. no assignments) has no file to check
    with fs.open(files[0], "rb") as f:
        found = pq.read_schema(f)
    for want in table.schema:
        have = found.field(want.name) if want.name in found.names else None
        if have is None or not _same_type(have.type, want.type):
            raise MissingTable(f"table '{table.name}' at {where}: column '{want.name}' should be {want.type}, "
                               f"found {'nothing' if have is None else have.type}")


def check_inputs(ctx: RunContext, names: tuple[str, ...]) -> None:
    """Check every table the current stage reads before it does any work."""
    for name in names:
        for table in resolve(ctx, name):
            check_table(ctx, table)
