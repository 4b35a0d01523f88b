"""SemDeDup's pure per-cluster function against a direct O(n²) numpy implementation of the rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.core.config import SemDedupConfig
from pipeline.dedup.semdedup import max_similarity_to_earlier, random_keys, semdedup_cluster


def reference(pdf: pd.DataFrame, cfg: SemDedupConfig, seed: int) -> dict[str, tuple[str, float]]:
    """{removed sample_id: (matched sample_id, max cos)} by the rule, computed the direct way."""
    ids = pdf["sample_id"].tolist()
    dist = pdf["dist_to_centroid"].tolist()
    if cfg.keep == "random":
        rank = dict(zip(ids, random_keys(pdf["sample_id"], seed).tolist()))
        order = sorted(range(len(ids)), key=lambda i: (rank[ids[i]], ids[i]))
    else:
        sign = -1.0 if cfg.keep == "hard" else 1.0
        order = sorted(range(len(ids)), key=lambda i: (sign * dist[i], ids[i]))
    cols = {"image": ["image_emb"], "text": ["text_emb"], "image+text": ["image_emb", "text_emb"]}[cfg.on]
    parts = []
    for col in cols:
        x = np.array([pdf[col].iloc[i] for i in order], dtype=np.float64)
        parts.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    x = np.concatenate(parts, axis=1) / np.sqrt(len(parts))
    sims = x @ x.T
    out = {}
    for j in range(1, len(order)):
        i = int(np.argmax(sims[:j, j]))  # first index on ties
        if sims[i, j] > 1.0 - cfg.eps:
            out[ids[order[j]]] = (ids[order[i]], float(sims[i, j]))
    return out


def got(pdf: pd.DataFrame, cfg: SemDedupConfig, seed: int = 0) -> dict[str, tuple[str, float]]:
    out = semdedup_cluster(pdf, cfg, seed)
    assert set(out["stage"]) <= {"semdedup"} and set(out["reason"]) <= {"semantic_duplicate"}
    return {r.sample_id: (r.matched_sample_id, r.score) for r in out.itertuples()}


def cluster_frame(x: np.ndarray, t: np.ndarray, dist: np.ndarray, prefix: str = "s") -> pd.DataFrame:
    n = len(x)
    return pd.DataFrame({
        "sample_id": [f"{prefix}/{i:05d}" for i in range(n)],
        "uid": [f"uid{i}" for i in range(n)],
        "cluster_id": 0,
        "dist_to_centroid": dist.astype(np.float32),
        "image_emb": list(x.astype(np.float32)),
        "text_emb": list(t.astype(np.float32)),
    })


def planted(n: int = 240, d: int = 12, seed: int = 0) -> pd.DataFrame:
    """Random unit vectors, a third of them near-copies (cos ~0.97-0.9999) of earlier ones; distance
    ties in blocks of three."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    t = rng.normal(size=(n, d))
    src = rng.integers(0, n // 2, size=n // 3)
    x[n - len(src):] = x[src] + rng.normal(scale=rng.uniform(0.01, 0.2, size=(len(src), 1)), size=(len(src), d))
    t[n - len(src):] = t[src] + rng.normal(scale=0.05, size=(len(src), d))
    dist = np.round(rng.uniform(0, 0.5, size=n) * 30) / 30  # many equal distances
    return cluster_frame(x, t, dist)


@pytest.mark.parametrize("keep", ["hard", "easy", "random"])
@pytest.mark.parametrize("on", ["image", "text", "image+text"])
def test_kept_set_equals_direct_implementation(keep: str, on: str) -> None:
    pdf = planted()
    for eps in (0.002, 0.02, 0.05):
        cfg = SemDedupConfig(eps=eps, keep=keep, on=on)
        want = reference(pdf, cfg, seed=3)
        assert 5 < len(want) < len(pdf) - 100, (eps, len(want))  # the rule removes something, not all
        for block_size in (7, 64, 4096):  # block_size 1: the tie and blocked-max tests
            result = got(pdf, SemDedupConfig(eps=eps, keep=keep, on=on, block_size=block_size), seed=3)
            assert {k: v[0] for k, v in result.items()} == {k: v[0] for k, v in want.items()}, block_size
            np.testing.assert_allclose([result[k][1] for k in want], [want[k][1] for k in want], atol=1e-12)


def test_keep_policy_decides_which_copy_stays() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 8))
    x[3] = x[0]  # an exact copy, farther from the centroid
    pdf = cluster_frame(x, x, np.array([0.1, 0.2, 0.3, 0.4]))
    assert set(got(pdf, SemDedupConfig(keep="hard"))) == {"s/00000"}  # the farther copy is kept
    assert got(pdf, SemDedupConfig(keep="easy")) == {"s/00003": ("s/00000", pytest.approx(1.0))}
    random = [next(iter(got(pdf, SemDedupConfig(keep="random"), seed=s))) for s in range(12)]
    assert set(random) == {"s/00000", "s/00003"}  # the seed decides
    assert random == [next(iter(got(pdf, SemDedupConfig(keep="random"), seed=s))) for s in range(12)]


def test_ties_go_to_sample_id_and_the_first_earlier_match() -> None:
    """Exactly representable vectors: equal distances are ordered by sample_id, equal similarities
    are matched to the earliest sample; removed samples still count as earlier samples; a cosine
    equal to 1 - eps is not removed."""
    h = 0.5
    a = [h, h, h, h, 0, 0, 0, 0]
    b = [h, h, 0, 0, h, h, 0, 0]  # cos(a, b) = 0.5 exactly
    c = [h, h, h, 0, h, 0, 0, 0]  # cos(a, c) = 0.75, cos(b, c) = 0.75
    x = np.array([c, a, b, a, c, a], dtype=np.float64)
    pdf = cluster_frame(x, x, np.zeros(6))
    for block_size in (1, 2, 4, 100):
        cfg = SemDedupConfig(eps=0.5, keep="hard", block_size=block_size)  # remove when cos > 0.5
        result = got(pdf, cfg)
        assert result == {
            "s/00001": ("s/00000", 0.75),  # a: its only earlier sample is c
            "s/00002": ("s/00000", 0.75),  # b: c (0.75) beats a (0.5)
            "s/00003": ("s/00001", 1.0),  # a again: the removed a is its best, earliest match
            "s/00004": ("s/00000", 1.0),
            "s/00005": ("s/00001", 1.0),  # two earlier a's: the first one
        }
        assert result == reference(pdf, cfg, seed=0)
    assert got(pdf.iloc[[1, 2]], SemDedupConfig(eps=0.5)) == {}  # cos exactly 0.5 is not > 0.5


def test_row_order_does_not_matter() -> None:
    pdf = planted(seed=5)
    cfg = SemDedupConfig(eps=0.05, keep="hard", block_size=16)
    shuffled = pdf.sample(frac=1.0, random_state=7).reset_index(drop=True)
    assert got(shuffled, cfg) == got(pdf, cfg)


def test_blocked_max_similarity_equals_one_block() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(257, 9))
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    x[200] = x[17]  # an exact tie with a later copy of 17 too
    x[230] = x[17]
    whole_best, whole_arg = max_similarity_to_earlier(x, 10_000)
    sims = x @ x.T
    assert whole_arg[0] == -1 and whole_best[0] == -np.inf
    for j in range(1, len(x)):
        assert whole_arg[j] == int(np.argmax(sims[:j, j]))
    assert whole_arg[230] == 17
    for block_size in (1, 5, 16, 100, 256, 257):
        best, arg = max_similarity_to_earlier(x, block_size)
        np.testing.assert_array_equal(arg, whole_arg)
        np.testing.assert_allclose(best[1:], whole_best[1:], atol=1e-12)


def test_small_clusters_remove_nothing() -> None:
    pdf = planted().iloc[:1]
    assert semdedup_cluster(pdf, SemDedupConfig()).empty
