"""Column expressions over the samples table that describe a sample (used by rules and the report)."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F


def short_side() -> Column:
    """The shorter image side in pixels."""
    return F.least("width", "height")


def aspect_ratio() -> Column:
    """Long side over short side."""
    return F.greatest("width", "height") / F.greatest(short_side(), F.lit(1))


def caption_words(caption: Column) -> Column:
    """Whitespace-separated words of a caption (0 for a null or blank caption)."""
    trimmed = F.trim(F.coalesce(caption, F.lit("")))
    return F.when(trimmed == "", F.lit(0)).otherwise(F.size(F.split(trimmed, r"\s+")))


def caption_chars(caption: Column) -> Column:
    """Characters of a caption without surrounding whitespace (0 for a null caption)."""
    return F.length(F.trim(F.coalesce(caption, F.lit(""))))
