"""DataComp's basic filter: image size, aspect ratio, caption length and (when a detector is
installed) caption language."""

from __future__ import annotations

import logging

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipeline.core.config import RunConfig
from pipeline.core.decisions import DecisionStage
from pipeline.core.stage import RunContext
from pipeline.language import caption_language, detector_available

log = logging.getLogger("curate")


def caption_words(caption: Column) -> Column:
    """Whitespace-separated words of a caption (0 for a null or blank caption)."""
    trimmed = F.trim(F.coalesce(caption, F.lit("")))
    return F.when(trimmed == "", F.lit(0)).otherwise(F.size(F.split(trimmed, r"\s+")))


def active_languages(languages: tuple[str, ...]) -> tuple[str, ...]:
    """The configured languages, or () with a logged note when no detector is installed."""
    if languages and not detector_available():
        log.warning("basic_filter: languages %s are set but no language detector is installed "
                    "(pip install 'curate-pipeline[lang]'); the caption language rule is skipped", list(languages))
        return ()
    return languages


class BasicFilter(DecisionStage):
    """Removes, with the first rule a sample fails: image_too_small, aspect_ratio, caption_too_short,
    caption_language (score: the detector's probability of the language it found)."""

    name = "basic_filter"

    def thresholds(self, cfg: RunConfig) -> dict[str, float]:
        """The value each reason's `score` is compared with (shown on the report's histograms)."""
        bf = cfg.basic_filter
        return {"image_too_small": bf.min_side, "aspect_ratio": bf.max_aspect, "caption_too_short": bf.min_caption_words}

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
        )
        languages = active_languages(cfg.languages)
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
