"""Exact dedup by content hash: of each group of identical image bytes, the smallest sample_id stays."""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from pipeline.core.decisions import DecisionStage
from pipeline.core.stage import RunContext


class ExactDedup(DecisionStage):
    """Removes every copy but one of each uid; the decision names the copy that was kept."""

    name = "exact_dedup"
    score_labels = {"exact_duplicate": "no score (same bytes)"}

    def decide(self, alive: DataFrame, ctx: RunContext) -> DataFrame:
        by_uid = Window.partitionBy("uid").orderBy("sample_id")
        return (
            alive.select("sample_id", "uid")
            .withColumn("rank", F.row_number().over(by_uid))
            .withColumn("matched_sample_id", F.first("sample_id").over(by_uid))
            .where("rank > 1")
            .withColumn("stage", F.lit(self.name))
            .withColumn("reason", F.lit("exact_duplicate"))
            .withColumn("score", F.lit(None).cast("double"))
            .withColumn("matched_uid", F.col("uid"))
        )
