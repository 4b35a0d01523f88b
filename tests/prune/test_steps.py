"""SSP, random, DFN and the image-based filter composed after the demo's embed + cluster: exact
sizes, the right samples, scores from a real forward pass of the filtering network."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import webdataset as wds
from PIL import Image

from pipeline.core.config import config_from_dict
from pipeline.core.runner import RunResult
from pipeline.core.stage import RunContext
from pipeline.core.tables import samples_df
from pipeline.models import ModelSpec, load_clip, make_tiny_checkpoint
from pipeline.prune.allocate import balanced_quotas, proportional_quotas
from pipeline.stages.dfn import Dfn
from tests.prune.conftest import alive_before, pool_before, removed_ids, run_dir_of, table


def n_keep(fraction: float, pool: int) -> int:
    return math.ceil(fraction * pool)


def embeddings(run: RunResult) -> dict[str, np.ndarray]:
    emb = table(run, "embed/parts")
    return dict(zip(emb["sample_id"], np.stack(emb["image_emb"].to_numpy())))


@pytest.fixture(scope="module")
def dfn_checkpoint(tmp_path_factory) -> Path:
    """The filtering network: another curate-tiny (seed 1), independent of the embedding model."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("dfn") / "dfn.pt", seed=1)


@pytest.fixture(scope="module")
def target_npy(dbp_run: RunResult, tmp_path_factory) -> tuple[Path, set[int]]:
    """Image embeddings of a few pool samples from three clusters, and those clusters."""
    assignments = table(dbp_run, "cluster/assignments").sort_values("sample_id")
    picks = assignments.groupby("cluster_id").head(1).head(3)
    emb = embeddings(dbp_run)
    path = tmp_path_factory.mktemp("target") / "target.npy"
    np.save(path, np.stack([emb[s] for s in picks["sample_id"]]).astype(np.float32))
    return path, set(picks["cluster_id"].tolist())


@pytest.fixture(scope="module")
def run_b(compose, dfn_checkpoint: Path, target_npy) -> RunResult:
    return compose(
        ["basic_filter", "exact_dedup", "image_based", "dfn", "ssp", "random"],
        f"image_based.target={target_npy[0]}",
        f"dfn.model={{arch: curate-tiny, pretrained: {dfn_checkpoint}}}", "dfn.top_fraction=0.6", "dfn.batch_size=32",
        "ssp.keep_fraction=0.75", "random.keep_fraction=0.5",
    )


@pytest.fixture(scope="module")
def run_c(compose, demo_dir: Path) -> RunResult:
    return compose(
        ["basic_filter", "exact_dedup", "ssp", "dfn", "random", "image_based"],
        "ssp.scope=cluster", "ssp.keep_fraction=0.7",
        "dfn.top_fraction=0.5", "dfn.quantile=approximate", "dfn.relative_error=0.05",
        "random.balance=cluster", "random.keep_fraction=0.8",
        f"image_based.target={demo_dir / 'eval'}",
    )


def test_image_based_with_npy_target_keeps_exactly_the_target_clusters(run_b: RunResult, target_npy) -> None:
    pool = pool_before(run_b, "image_based")
    _, clusters = target_npy
    expected = set(pool.loc[~pool["cluster_id"].isin(clusters), "sample_id"])
    assert removed_ids(run_b, "image_based") == expected and expected
    counts = run_b.manifests["image_based"]["counts"]
    assert counts["target_images"] == 3 and counts["target_clusters"] == len(clusters)
    assert set(table(run_b, "image_based/target_clusters")["cluster_id"]) == clusters


def test_dfn_scores_are_the_filtering_models_cosine(run_b: RunResult, dfn_checkpoint: Path) -> None:
    scores = table(run_b, "dfn/scores/parts").set_index("sample_id")["score"]
    assert set(scores.index) == alive_before(run_b, "dfn")
    samples = table(run_b, "ingest/parts").set_index("sample_id")
    clip = load_clip(ModelSpec(arch="curate-tiny", pretrained=str(dfn_checkpoint)))
    ids = sorted(scores.index)[::5]
    images = []
    for sid in ids:
        s = samples.loc[sid]
        with open(s["shard"], "rb") as f:
            f.seek(int(s["image_offset"]))
            images.append(clip.preprocess(Image.open(io.BytesIO(f.read(int(s["image_bytes"])))).convert("RGB")))
    with torch.inference_mode():
        img = torch.nn.functional.normalize(clip.model.encode_image(torch.stack(images)), dim=-1)
        tokens = clip.tokenizer(list(samples.loc[ids, "caption"]))
        txt = torch.nn.functional.normalize(clip.model.encode_text(tokens), dim=-1)
    expected = (img * txt).sum(dim=-1).numpy()
    np.testing.assert_allclose(scores.loc[ids].to_numpy(), expected, atol=1e-5)
    embed_scores = table(run_b, "embed/parts").set_index("sample_id")["clip_score"].loc[ids].to_numpy()
    assert np.max(np.abs(embed_scores - expected)) > 1e-3  # a different network than the embedding model


def test_dfn_top_fraction_exact_keeps_the_best_ceil_f_n(run_b: RunResult) -> None:
    scores = table(run_b, "dfn/scores/parts")
    ranked = scores.sort_values(["score", "sample_id"], ascending=[False, True])
    keep = n_keep(0.6, len(scores))
    assert run_b.manifests["dfn"]["counts"]["keep"]["n_keep"] == keep
    assert removed_ids(run_b, "dfn") == set(ranked["sample_id"].iloc[keep:])
    decisions = table(run_b, "dfn/decisions").merge(scores, on="sample_id", suffixes=("", "_s"))
    np.testing.assert_allclose(decisions["score"], decisions["score_s"].astype(np.float64))
    assert (decisions["reason"] == "dfn_low_score").all()


def test_dfn_keep_count_keeps_the_best_n(spark, run_b: RunResult, demo_dir: Path, tmp_path: Path) -> None:
    emb = table(run_b, "embed/parts")
    cfg = config_from_dict({"input": str(demo_dir / "shards"), "run_dir": str(run_dir_of(run_b)),
                            "dfn": {"keep_count": 100}})
    ctx = RunContext(cfg=cfg, spark=spark)
    removed, counts = Dfn().prune(samples_df(ctx).where("quarantine_reason IS NULL"), ctx, str(tmp_path))
    ranked = emb.sort_values(["clip_score", "sample_id"], ascending=[False, True])
    assert {r["sample_id"] for r in removed.collect()} == set(ranked["sample_id"].iloc[100:])
    assert counts["keep"]["n_keep"] == 100 and counts["keep"]["requested"] == 100


def test_dfn_threshold_on_clip_score_removes_exactly_the_lower_scores(
    spark, run_b: RunResult, demo_dir: Path, tmp_path: Path
) -> None:
    """Without a filtering model the score is embed's clip_score (DataComp's CLIP-score filter)."""
    emb = table(run_b, "embed/parts")
    threshold = float(np.median(emb["clip_score"]))
    cfg = config_from_dict({"input": str(demo_dir / "shards"), "run_dir": str(run_dir_of(run_b)),
                            "dfn": {"threshold": threshold}})
    ctx = RunContext(cfg=cfg, spark=spark)
    alive = samples_df(ctx).where("quarantine_reason IS NULL")
    removed, counts = Dfn().prune(alive, ctx, str(tmp_path))
    rows = {r["sample_id"]: r for r in removed.collect()}
    assert set(rows) == set(emb.loc[emb["clip_score"] < threshold, "sample_id"])
    assert all(r["reason"] == "dfn_low_score" and r["score"] < threshold for r in rows.values())
    assert counts["unscored"] == alive.count() - len(emb)


def test_ssp_global_removes_the_most_prototypical(run_b: RunResult) -> None:
    pool = pool_before(run_b, "ssp")
    keep = n_keep(0.75, len(pool))
    ranked = pool.sort_values(["dist_to_centroid", "sample_id"], ascending=[False, True])
    assert removed_ids(run_b, "ssp") == set(ranked["sample_id"].iloc[keep:])
    assert run_b.ledger["removed"]["ssp"] == {"ssp_prototypical": len(pool) - keep}


def test_random_uniform_keeps_exactly_the_requested_size(run_b: RunResult) -> None:
    alive = alive_before(run_b, "random")
    removed = removed_ids(run_b, "random")
    assert removed <= alive
    assert len(alive) - len(removed) == n_keep(0.5, len(alive)) == run_b.ledger["kept"]


def assert_ledger_balances(run: RunResult) -> None:
    ledger = run.ledger
    removed = sum(sum(v.values()) for v in ledger["removed"].values())
    assert ledger["input"] == ledger["kept"] + removed + sum(ledger["quarantined"].values())
    assert all(ledger["removed"][s] for s in ("image_based", "dfn", "ssp", "random"))


def test_composed_run_balances_the_ledger(run_b: RunResult) -> None:
    assert_ledger_balances(run_b)


# The second composed run (other variants of the same steps) is in the slow suite: ~20-60 s here.


@pytest.mark.slow
def test_second_composed_run_balances_the_ledger(run_c: RunResult) -> None:
    assert_ledger_balances(run_c)


@pytest.mark.slow
def test_ssp_per_cluster_keeps_the_same_fraction_of_every_cluster(run_c: RunResult) -> None:
    pool = pool_before(run_c, "ssp")
    removed = removed_ids(run_c, "ssp")
    sizes = pool.groupby("cluster_id").size().sort_index()
    quotas = dict(zip(sizes.index, proportional_quotas(sizes.to_numpy(), n_keep(0.7, len(pool)))))
    for cluster, members in pool.groupby("cluster_id"):
        ranked = members.sort_values(["dist_to_centroid", "sample_id"], ascending=[False, True])
        assert set(members["sample_id"]) - removed == set(ranked["sample_id"].iloc[: quotas[cluster]])
    assert len(pool) - len(removed) == n_keep(0.7, len(pool))


@pytest.mark.slow
def test_dfn_approximate_quantile_is_within_its_error_bound(run_c: RunResult) -> None:
    pool = alive_before(run_c, "dfn")
    counts = run_c.manifests["dfn"]["counts"]
    target = counts["keep"]["n_keep"]
    kept = len(pool) - len(removed_ids(run_c, "dfn"))
    scores = table(run_c, "embed/parts").set_index("sample_id")["clip_score"].loc[sorted(pool)]
    ties = int((scores == np.float32(counts["threshold"])).sum())
    assert target == n_keep(0.5, len(pool))
    assert abs(kept - target) <= 0.05 * len(pool) + ties
    assert kept == int((scores >= np.float32(counts["threshold"])).sum())


@pytest.mark.slow
def test_cluster_balanced_random_gives_every_cluster_the_same_quota(run_c: RunResult) -> None:
    pool = pool_before(run_c, "random")
    removed = removed_ids(run_c, "random")
    sizes = pool.groupby("cluster_id").size().sort_index()
    quotas = balanced_quotas(sizes.to_numpy(), n_keep(0.8, len(pool)))
    kept = pool[~pool["sample_id"].isin(removed)].groupby("cluster_id").size().reindex(sizes.index, fill_value=0)
    np.testing.assert_array_equal(kept.to_numpy(), quotas)
    assert quotas.sum() == n_keep(0.8, len(pool))


@pytest.mark.slow
def test_image_based_with_shard_target_uses_the_eval_images_nearest_clusters(
    run_c: RunResult, demo_dir: Path, tiny_checkpoint: Path
) -> None:
    cents = np.load(run_dir_of(run_c) / "cluster" / "centroids.npy", allow_pickle=False)
    clip = load_clip(ModelSpec(arch="curate-tiny", pretrained=str(tiny_checkpoint)))
    tars = sorted(str(p) for p in (demo_dir / "eval").glob("*.tar"))
    eval_set = wds.WebDataset(tars, shardshuffle=False).decode("pil").to_tuple("jpg;png;webp")
    images = [clip.preprocess(img) for (img,) in eval_set]
    with torch.inference_mode():
        emb = torch.nn.functional.normalize(clip.model.encode_image(torch.stack(images)), dim=-1).numpy()
    expected = set(np.argmax(emb @ cents.T, axis=1).tolist())
    matched = pq.read_table(run_dir_of(run_c) / "image_based" / "target_clusters")["cluster_id"].to_pylist()
    assert set(matched) == expected
    assert run_c.manifests["image_based"]["counts"]["target_images"] == len(images)
    pool = pool_before(run_c, "image_based")
    assert removed_ids(run_c, "image_based") == set(pool.loc[~pool["cluster_id"].isin(expected), "sample_id"])
