"""pHash banding: the pigeonhole layout, Spark pair finding against brute force, grouping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyspark.sql import functions as F

from pipeline.dedup.phash import aspect_key, band_layout, hash_pairs, node_groups


def signed(v: int) -> int:
    return v - (1 << 64) if v >= (1 << 63) else v


def distance(a: int, b: int) -> int:
    return bin((a ^ b) & ((1 << 64) - 1)).count("1")


def flip(h: int, bits: np.ndarray) -> int:
    for b in bits:
        h ^= 1 << int(b)
    return signed(h & ((1 << 64) - 1))


def test_bands_cover_the_64_bits_and_pigeonhole_holds() -> None:
    rng = np.random.default_rng(0)
    for t in (0, 1, 4, 7, 16):
        layout = band_layout(t)
        assert len(layout) == t + 1
        assert [s for s, _ in layout] == list(np.cumsum([0] + [w for _, w in layout[:-1]]))
        assert sum(w for _, w in layout) == 64 and max(w for _, w in layout) - min(w for _, w in layout) <= 1
        for _ in range(200):  # any t flipped bits leave at least one band untouched
            bits = rng.choice(64, size=t, replace=False)
            assert any(not any(s <= b < s + w for b in bits) for s, w in layout)
    with pytest.raises(ValueError):
        band_layout(64)


@pytest.fixture(scope="module")
def hashes() -> list[int]:
    """600 random hashes, 150 more within 1-6 bits of one of them, and some repeated values."""
    rng = np.random.default_rng(1)
    base = [signed(int(v)) for v in rng.integers(0, 2**63, size=600, dtype=np.int64) * 2 + rng.integers(0, 2, 600)]
    near = [flip(base[int(i)] & ((1 << 64) - 1), rng.choice(64, size=int(k), replace=False))
            for i, k in zip(rng.integers(0, 600, 150), rng.integers(1, 7, 150))]
    return base + near + base[:20]


def brute_force(left: list[int], right: list[int] | None, t: int) -> set[tuple[int, int]]:
    if right is None:
        values = sorted(set(left))
        return {(a, b) for i, a in enumerate(values) for b in values[i + 1:] if distance(a, b) <= t}
    return {(a, b) for a in set(left) for b in set(right) if distance(a, b) <= t}


def test_pairs_within_a_threshold_equal_brute_force(spark, hashes: list[int]) -> None:
    df = spark.createDataFrame([(h,) for h in hashes], "phash long")
    right = spark.createDataFrame([(h,) for h in hashes[600:700]], "phash long")
    for t in (4,):
        found = hash_pairs(df, None, t, max_bucket=10_000)
        rows = found.pairs.collect()
        assert {(r["phash_a"], r["phash_b"]) for r in rows} == brute_force(hashes, None, t)
        assert all(r["distance"] == distance(r["phash_a"], r["phash_b"]) for r in rows)
        assert len(rows) > 20 and found.oversized.count() == 0
        cross = {(r["phash_a"], r["phash_b"]) for r in hash_pairs(df, right, t, 10_000).pairs.collect()}
        assert cross == brute_force(hashes, hashes[600:700], t)
        assert all((h, h) in cross for h in hashes[600:700])  # equal hashes pair across sets


def test_oversized_buckets_are_skipped_and_reported(spark) -> None:
    # 40 hashes sharing their low 32 bits; with t = 1 the two bands are the low and high 32 bits
    rng = np.random.default_rng(3)
    crowd = [signed((int(h) << 32) | 0xABCD) for h in rng.integers(0, 2**31, size=40)]
    crowd[1] = signed((crowd[0] & ((1 << 64) - 1)) ^ (1 << 40))  # 1 bit from crowd[0], only the low band agrees
    df = spark.createDataFrame([(h,) for h in crowd], "phash long")
    full = hash_pairs(df, None, 1, max_bucket=100)
    assert {(r["phash_a"], r["phash_b"]) for r in full.pairs.collect()} == {tuple(sorted(crowd[:2]))}
    capped = hash_pairs(df, None, 1, max_bucket=39)
    assert capped.pairs.count() == 0
    assert [(r["band"], r["size"]) for r in capped.oversized.collect()] == [(0, 40)]


def test_aspect_guard_links_only_similar_shapes(spark) -> None:
    rows = [(5, 100, 80), (6, 81, 65), (4, 100, 50), (5, 200, 100)]  # phash, width, height
    df = spark.createDataFrame(rows, "phash long, width int, height int").select(
        "phash", aspect_key(F.col("width"), F.col("height")).alias("aspect"))
    wide, square = round(math.log(2) * 1e6), round(math.log(1.25) * 1e6)
    assert sorted(r["aspect"] for r in df.collect()) == sorted([square, round(math.log(81 / 65) * 1e6), wide, wide])
    pairs = {(r["phash_a"], r["aspect_a"], r["phash_b"], r["aspect_b"])
             for r in hash_pairs(df, None, 4, 100, max_aspect_change=0.02).pairs.collect()}
    # 100x80 ~ 81x65 (1.25 vs 1.246), and the two 2:1 images; not across shapes (5 with itself neither)
    assert pairs == {(5, square, 6, round(math.log(81 / 65) * 1e6)), (4, wide, 5, wide)}
    assert hash_pairs(df, None, 4, 100).pairs.count() == 3  # without the guard: every distinct hash pair


def test_groups_are_connected_components_named_by_their_smallest_node() -> None:
    a = np.array([[9], [3], [20], [3]])
    b = np.array([[3], [7], [21], [7]])
    nodes, groups = node_groups(a, b)
    assert dict(zip(nodes[:, 0].tolist(), groups[:, 0].tolist())) == {3: 3, 7: 3, 9: 3, 20: 20, 21: 20}
    two = node_groups(np.array([[1, 5], [1, 5]]), np.array([[1, 6], [0, 9]]))
    assert two[0].tolist() == [[0, 9], [1, 5], [1, 6]] and two[1].tolist() == [[0, 9]] * 3
    empty_nodes, empty_groups = node_groups(np.zeros((0, 1)), np.zeros((0, 1)))
    assert len(empty_nodes) == len(empty_groups) == 0
