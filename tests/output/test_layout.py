"""Output shard layout on real Spark DataFrames: caps hold and the layout ignores how rows are partitioned."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from pipeline.core.config import ConfigError, config_from_dict
from pipeline.core.tasks import run_grouped_tables
from pipeline.export.layout import INDEX, plan_layout, sample_bytes, with_positions


def rows(n: int) -> list[dict]:
    """Samples of varied sizes (1-40 KB images, captions of 0-90 characters)."""
    return [{"i": i, "image_bytes": 1000 + (i * 7919) % 39000, "caption": "x" * (i % 91) or None, "url": f"u{i}"}
            for i in range(n)]


def layout(spark, data: list[dict], partitions: int, per_shard: int, max_bytes: int | None) -> list[int]:
    """The shard of each row, rows ordered by `i` over `partitions` range partitions."""
    df = spark.createDataFrame(data, "i long, image_bytes long, caption string, url string")
    positioned = with_positions(df.repartitionByRange(partitions, "i").sortWithinPartitions("i"))
    plan = plan_layout(positioned, per_shard, max_bytes)
    groups = run_grouped_tables(positioned, plan.n_shards, lambda shard, rows: {
        "shard": shard, "i": rows.column("i").to_pylist(), "index": rows.column(INDEX).to_pylist()}, assign=plan.assign)
    assert [g["i"] for g in groups] == [g["index"] for g in groups]  # the global index follows the order
    assert sorted(i for g in groups for i in g["i"]) == list(range(len(data)))
    by_index = {i: g["shard"] for g in groups for i in g["i"]}
    shards = [by_index[i] for i in range(len(data))]
    n_shards = plan.n_shards
    assert sorted(set(shards)) == list(range(n_shards))  # numbered densely
    assert shards == sorted(shards)  # contiguous runs in output order
    return shards


def test_byte_windows_are_the_same_for_any_partitioning(spark) -> None:
    data = rows(500)
    assert layout(spark, data, 1, 40, 150_000) == layout(spark, data, 5, 40, 150_000)


def test_count_only_layout_fills_shards_in_order(spark) -> None:
    shards = layout(spark, rows(101), 4, 25, None)
    assert [shards.count(s) for s in range(max(shards) + 1)] == [25, 25, 25, 25, 1]


def test_byte_cap_cuts_windows_into_equal_pieces(spark) -> None:
    data, per_shard, cap = rows(500), 40, 1_500_000  # ~68 samples per byte window
    shards = layout(spark, data, 5, per_shard, cap)
    sizes = list(sample_bytes(pa.Table.from_pylist(data)))
    largest = max(sizes)
    n = max(shards) + 1
    counts = [shards.count(s) for s in range(n)]
    totals = [sum(b for b, s in zip(sizes, shards) if s == k) for k in range(n)]
    assert n > math.ceil(len(data) / per_shard)  # the byte cap binds
    assert max(counts) <= per_shard and max(totals) <= cap + largest
    assert min(counts[:-1]) >= per_shard // 3  # no one-sample remainders between windows


def test_export_config_errors_name_the_key() -> None:
    base = {"input": "/tmp", "run_dir": "/tmp/run"}
    cases = {
        "export.order": {"export": {"order": "cluster"}},
        "export.include_embeddings": {"export": {"include_embeddings": True}},
        "export.max_shard_bytes": {"export": {"max_shard_bytes": 0}},
    }
    for key, extra in cases.items():
        with pytest.raises(ConfigError, match=f"'{key}'"):
            config_from_dict({**base, **extra})
