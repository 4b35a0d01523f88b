"""The caption language rule of basic_filter (py3langid, through Spark) and the exact global rank
the pruning steps share."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import functions as F

from pipeline.core.config import config_from_dict
from pipeline.core.stage import RunContext
from pipeline.language import detect
from pipeline.prune.select import beyond_rank, seeded_hash, with_global_rank
from pipeline.stages.basic_filter import BasicFilter
from schemas import SAMPLES, spark_schema

CAPTIONS = {
    "a/0": "A red bicycle leaning against a brick wall",
    "a/1": "Un chat noir dort sur le canapé du salon",
    "a/2": "Ein kleiner Hund spielt im Garten mit einem Ball",
    "a/3": "Two children flying a kite on the beach",
}


def test_detect_names_the_language_of_each_caption() -> None:
    pytest.importorskip("py3langid")
    found = detect([*CAPTIONS.values(), None, "  "])
    assert [lang for lang, _ in found] == ["en", "fr", "de", "en", None, None]
    assert all(0.5 < p <= 1.0 for _, p in found[:4])


def test_basic_filter_removes_captions_in_other_languages(spark, tmp_path: Path) -> None:
    pytest.importorskip("py3langid")
    rows = [dict.fromkeys(SAMPLES.names) | {"sample_id": sid, "uid": sid, "shard": "x.tar", "shard_name": "x",
                                            "key": sid, "caption": cap, "width": 300, "height": 300}
            for sid, cap in CAPTIONS.items()]
    alive = spark.createDataFrame(rows, spark_schema(SAMPLES))
    cfg = config_from_dict({"input": str(tmp_path), "run_dir": str(tmp_path / "run"),
                            "basic_filter": {"languages": ["en"]}})
    removed = {r["sample_id"]: r for r in BasicFilter().decide(alive, RunContext(cfg=cfg, spark=spark)).collect()}
    assert set(removed) == {"a/1", "a/2"}
    assert {r["reason"] for r in removed.values()} == {"caption_language"}
    assert removed["a/1"]["score"] == pytest.approx(detect([CAPTIONS["a/1"]])[0][1])
    with_de = config_from_dict({"input": str(tmp_path), "run_dir": str(tmp_path / "run"),
                                "basic_filter": {"languages": ["en", "de"]}})
    kept_de = BasicFilter().decide(alive, RunContext(cfg=with_de, spark=spark)).collect()
    assert [r["sample_id"] for r in kept_de] == ["a/1"]


def test_global_rank_is_exact_and_independent_of_partitioning(spark) -> None:
    df = spark.range(1000).select(F.format_string("s%04d", "id").alias("sample_id"), (F.col("id") % 7).alias("v"))
    order = [F.col("v").desc(), F.col("sample_id").asc()]
    ranked = with_global_rank(df.repartition(5), order).orderBy("_rank").collect()
    assert [r["_rank"] for r in ranked] == list(range(1000))
    expected = sorted(((r["v"], r["sample_id"]) for r in ranked), key=lambda t: (-t[0], t[1]))
    assert [(r["v"], r["sample_id"]) for r in ranked] == expected
    hashed = [seeded_hash(3).asc(), F.col("sample_id").asc()]
    one = {r["sample_id"] for r in beyond_rank(df.coalesce(1), 300, hashed).collect()}
    many = {r["sample_id"] for r in beyond_rank(df.repartition(7), 300, hashed).collect()}
    assert one == many and len(one) == 700
    reseeded = [seeded_hash(4).asc(), F.col("sample_id").asc()]
    other_seed = {r["sample_id"] for r in beyond_rank(df, 300, reseeded).collect()}
    assert other_seed != one
