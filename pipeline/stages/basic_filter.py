"""DataComp's basic filter: image size, aspect ratio, caption length and (with `languages`) caption
language."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.core.config import RunConfig
from pipeline.core.decisions import DecisionStage
from pipeline.core.sample_columns import aspect_ratio, caption_chars, caption_words, short_side
from pipeline.core.stage import RunContext
from pipeline.core.tables import samples_df
from pipeline.language import caption_language


class BasicFilter(DecisionStage):
    """Removes, with the first rule a sample fails: image_too_small, aspect_ratio, caption_too_short,
    caption_language (score: the detector's probability of the language it found)."""

    name = "basic_filter"
    score_labels = {"image_too_small": "shorter side (pixels)", "aspect_ratio": "aspect ratio (long side / short side)",
                    "caption_too_short": "caption words",
                    "caption_language": "detector probability of the caption's language"}

    def kept_scores(self, ctx: RunContext, kept: DataFrame) -> dict[str, DataFrame]:
        """Shorter side, aspect ratio and caption words of the kept samples."""
        rows = samples_df(ctx).join(kept.select("sample_id"), "sample_id", "left_semi")
        metrics = {"image_too_small": short_side(), "aspect_ratio": aspect_ratio(),
                   "caption_too_short": caption_words(F.col("caption"))}
        return {reason: rows.select("sample_id", metric.cast("double").alias("score")) for reason, metric in metrics.items()}

    def thresholds(self, cfg: RunConfig) -> dict[str, float]:
        """The value each reason's `score` is compared with (shown on the report's histograms)."""
        bf = cfg.basic_filter
        return {"image_too_small": bf.min_side, "aspect_ratio": bf.max_aspect, "caption_too_short": bf.min_caption_words}

    def decide(self, alive: DataFrame, ctx: RunContext) -> DataFrame:
        cfg = ctx.cfg.basic_filter
        short, aspect = short_side(), aspect_ratio()
        words = caption_words(F.col("caption"))
        chars = caption_chars(F.col("caption"))
        reason = (
            F.when(short < cfg.min_side, F.lit("image_too_small"))
            .when(aspect > cfg.max_aspect, F.lit("aspect_ratio"))
            .when((words < cfg.min_caption_words) | (chars < cfg.min_caption_chars), F.lit("caption_too_short"))
        )
        score = (
            F.when(reason == "image_too_small", short.cast("double"))
            .when(reason == "aspect_ratio", aspect.cast("double"))
        )
        languages = cfg.languages
        if languages:
            alive = alive.withColumn("_lang", caption_language(F.col("caption")))
            lang = F.col("_lang.lang")
            reason = reason.when(lang.isNotNull() & ~lang.isin(*languages), F.lit("caption_language"))
            score = score.when(reason == "caption_language", F.col("_lang.confidence"))
        score = score.otherwise(words.cast("double"))
        return (
            alive.withColumn("reason", reason)
            .where(F.col("reason").isNotNull())
            .withColumn("stage", F.lit(self.name))
            .withColumn("score", score)
            .withColumn("matched_uid", F.lit(None).cast("string"))
            .withColumn("matched_sample_id", F.lit(None).cast("string"))
        )
