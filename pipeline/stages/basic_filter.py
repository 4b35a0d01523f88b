"""DataComp's basic filter: image size, aspect ratio and caption length."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipeline.core.decisions import DecisionStage
from pipeline.core.stage import RunContext


def caption_words(caption: Column) -> Column:
    """Whitespace-separated words of a caption (0 for a null or blank caption)."""
    trimmed = F.trim(F.coalesce(caption, F.lit("")))
    return F.when(trimmed == "", F.lit(0)).otherwise(F.size(F.split(trimmed, r"\s+")))


class BasicFilter(DecisionStage):
    """Removes, with the first rule a sample fails: image_too_small, aspect_ratio, caption_too_short."""

    name = "basic_filter"

    def decide(self, alive: DataFrame, ctx: RunContext) -> DataFrame:
        cfg = ctx.cfg.basic_filter
        if not cfg.enabled:
            alive = alive.limit(0)
        short_side = F.least("width", "height")
        aspect = F.greatest("width", "height") / F.greatest(short_side, F.lit(1))
        words = caption_words(F.col("caption"))
        chars = F.length(F.trim(F.coalesce(F.col("caption"), F.lit(""))))
        reason = (
            F.when(short_side < cfg.min_side, F.lit("image_too_small"))
            .when(aspect > cfg.max_aspect, F.lit("aspect_ratio"))
            .when((words < cfg.min_caption_words) | (chars < cfg.min_caption_chars), F.lit("caption_too_short"))
        )
        score = (
            F.when(reason == "image_too_small", short_side.cast("double"))
            .when(reason == "aspect_ratio", aspect.cast("double"))
            .otherwise(words.cast("double"))
        )
        return (
            alive.withColumn("reason", reason)
            .where(F.col("reason").isNotNull())
            .withColumn("stage", F.lit(self.name))
            .withColumn("score", score)
            .withColumn("matched_uid", F.lit(None).cast("string"))
            .withColumn("matched_sample_id", F.lit(None).cast("string"))
        )
