"""Caption language identification with py3langid (the optional extra `lang`: pure Python + numpy,
its model ships inside the package and loads without pickle, and it gives the same answer for the
same text every time). A config that sets `basic_filter.languages` without it is refused
(pipeline/core/config.py), naming the extra."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline.core.config import LANGUAGE_DETECTOR

LANGUAGE_TYPE = T.StructType([T.StructField("lang", T.StringType()), T.StructField("confidence", T.DoubleType())])

_identifier = None  # loaded once per Python process (Spark worker)


def detector_available() -> bool:
    """True when the language detector is installed."""
    return importlib.util.find_spec(LANGUAGE_DETECTOR) is not None


def _get_identifier():
    global _identifier
    if _identifier is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _identifier


def detect(texts: Iterable[str | None]) -> list[tuple[str | None, float | None]]:
    """(ISO 639-1 code, probability) of each text's most likely language; (None, None) for a null
    or blank text."""
    identifier = _get_identifier()
    out: list[tuple[str | None, float | None]] = []
    for text in texts:
        if text is None or not text.strip():
            out.append((None, None))
        else:
            lang, prob = identifier.classify(text)
            out.append((lang, float(prob)))
    return out


@F.pandas_udf(LANGUAGE_TYPE)
def _detect_udf(captions: pd.Series) -> pd.DataFrame:
    found = detect(None if pd.isna(c) else c for c in captions)
    return pd.DataFrame({"lang": [lang for lang, _ in found], "confidence": [p for _, p in found]})


def caption_language(caption: Column) -> Column:
    """A struct column (lang, confidence) with the detected language of `caption`."""
    return _detect_udf(caption)
