"""Stages that remove samples: they write DECISIONS rows (one per removed sample, with a reason)."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame

from pipeline.core.stage import RunContext, Stage, alive_df
from schemas import DECISIONS


class DecisionStage(Stage):
    """Sees only the samples still alive, and records why it removes each one it removes."""

    removes_samples = True

    def decide(self, alive: DataFrame, ctx: RunContext) -> DataFrame:
        """Rows with the DECISIONS columns for the samples this stage removes."""
        raise NotImplementedError

    def execute(self, ctx: RunContext, out_dir: str) -> dict[str, Any]:
        path = f"{out_dir}/decisions"
        ctx.spark.sparkContext.setJobDescription(f"{self.name}: decide")
        self.decide(alive_df(ctx), ctx).select(*DECISIONS.names).write.mode("overwrite").parquet(path)
        written = ctx.spark.read.parquet(path).groupBy("reason").count().collect()
        removed = {r["reason"]: r["count"] for r in sorted(written, key=lambda r: r["reason"])}
        return {"removed": removed}
