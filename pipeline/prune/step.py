"""The shape shared by the pruning and filtering steps: choose the removed samples and report
counts beside the per-reason removals (keep plans, pool sizes) in the stage manifest."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame

from pipeline.core.decisions import DecisionStage, write_decisions
from pipeline.core.stage import RunContext
from pipeline.core.tables import alive_df


class PruneStep(DecisionStage):
    """A decision stage whose `prune` also returns counts for the manifest."""

    def prune(self, alive: DataFrame, ctx: RunContext, out_dir: str) -> tuple[DataFrame, dict[str, Any]]:
        """(DECISIONS rows of the removed samples, extra manifest counts); may write side tables
        under `out_dir`."""
        raise NotImplementedError

    def execute(self, ctx: RunContext, out_dir: str) -> dict[str, Any]:
        ctx.spark.sparkContext.setJobDescription(f"{self.name}: decide")
        removed, counts = self.prune(alive_df(ctx), ctx, out_dir)
        return {"removed": write_decisions(ctx, removed, out_dir), **counts}
