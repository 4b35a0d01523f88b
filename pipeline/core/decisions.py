"""Stages that remove samples: they write DECISIONS rows (one per removed sample, with a reason)."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame

from pipeline.core.stage import RunContext, Stage
from pipeline.core.tables import POOL, alive_df
from schemas import DECISIONS, spark_schema


class DecisionStage(Stage):
    """Sees only the samples still alive, and records why it removes each one it removes."""

    removes_samples = True
    reads = (POOL,)

    def decide(self, alive: DataFrame, ctx: RunContext) -> DataFrame:
        """Rows with the DECISIONS columns for the samples this stage removes."""
        raise NotImplementedError

    def execute(self, ctx: RunContext, out_dir: str) -> dict[str, Any]:
        ctx.spark.sparkContext.setJobDescription(f"{self.name}: decide")
        return {"removed": write_decisions(ctx, self.decide(alive_df(ctx), ctx), out_dir)}


def no_decisions(ctx: RunContext) -> DataFrame:
    """An empty DECISIONS table, for a stage that removed nothing."""
    return ctx.spark.createDataFrame([], spark_schema(DECISIONS))


def write_decisions(ctx: RunContext, decisions: DataFrame, out_dir: str) -> dict[str, int]:
    """Write DECISIONS rows under `out_dir/decisions`; return the written count per reason."""
    path = f"{out_dir}/decisions"
    decisions.select(*DECISIONS.names).write.mode("overwrite").parquet(path)
    written = ctx.spark.read.parquet(path).groupBy("reason").count().collect()
    return {r["reason"]: r["count"] for r in sorted(written, key=lambda r: r["reason"])}
