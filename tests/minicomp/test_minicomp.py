"""Mini-DataComp benchmark: its world, its cell configs, its evaluation, and (slow) a whole small run."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import open_clip
import pyarrow.parquet as pq
import pytest
import torch

from bench.minicomp import clip
from bench.minicomp.run import FULL, Scale, method_config, run
from bench.minicomp.world import POOL_RATES, build_world, task_classes, task_labels
from pipeline.core.config import config_from_dict
from pipeline.core.runner import pipeline_stages
from pipeline.demo.render import concept_grid


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    return build_world(tmp_path_factory.mktemp("world"), n_pool=400, n_clean=60, eval_per_concept=1, seed=0,
                       samples_per_shard=200)


def test_world_has_its_defects_a_heldout_set_per_concept_and_leaks_from_it(world: dict) -> None:
    assert world["pool"]["kinds"] == {"clean": 156, **{k: round(r * 400) for k, r in POOL_RATES.items()}}
    grid = [c.label for c in concept_grid()]
    assert world["heldout_concepts"] == grid and world["n_concepts"] == 384
    truth = pq.read_table(world["pool"]["ground_truth"]).to_pylist()
    leaks = [r for r in truth if r["kind"] == "eval_copy"]
    assert len(leaks) == 12 and all(r["source_shard"] == "eval/00000" for r in leaks)
    heldout = pq.read_table(Path(world["pool"]["out_dir"]) / "eval_ground_truth.parquet").to_pylist()
    by_key = {r["key"]: r["concept"] for r in heldout}
    assert all(by_key[r["source_key"]] == r["concept"] for r in leaks)
    concepts = Counter(r["concept"] for r in truth if r["kind"] == "clean")
    assert concepts.most_common(1)[0][1] >= 5 and len(concepts) < 384  # long tail: most concepts are rare


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised `minicomp-clip` saved as open_clip_train saves its checkpoints."""
    clip.register_arch()
    torch.manual_seed(0)
    model = open_clip.create_model(clip.ARCH)
    path = tmp_path_factory.mktemp("ckpt") / "epoch_1.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def test_task_labels_follow_the_concepts() -> None:
    grid = concept_grid()
    picks = [grid[0], grid[100], grid[383]]
    labels = task_labels([c.label for c in picks])
    classes = task_classes()
    for task, attr in (("shape", "shape"), ("colour", "colour"), ("background", "background")):
        assert [classes[task][i] for i in labels[task]] == [getattr(c, attr) for c in picks]
    assert labels["concept"].tolist() == [0, 100, 383]


def test_every_cell_is_a_valid_product_config_and_equal_fractions_keep_equal_counts(
    world: dict, checkpoint: Path, tmp_path: Path
) -> None:
    arch = clip.export_local_dir(checkpoint, tmp_path / "filter-model")  # the filtering network's form
    plans, keeps = {}, {}
    for method in FULL.methods:
        cfg = config_from_dict(method_config(method, world, tmp_path / method, arch, FULL, n_usable=1001))
        plans[method] = [s.name for s in pipeline_stages(cfg)]
        step = {"best": "dfn"}.get(method.partition("@")[0])
        if "@" in method:
            keeps[method] = getattr(cfg, step or method.partition("@")[0]).keep_count
    assert plans["none"] == ["ingest", "export"] and plans["random@0.3"] == ["ingest", "random", "export"]
    assert plans["dbp@0.3"] == ["ingest", "embed", "cluster", "dbp", "export"]
    assert plans["best@0.3"] == ["ingest", "basic_filter", "exact_dedup", "phash_dedup", "decontaminate", "embed",
                                 "dfn", "export"]
    for frac, count in (("0.1", 100), ("0.3", 300), ("0.5", 500)):
        assert {keeps[m] for m in keeps if m.endswith(frac)} == {count}
    with pytest.raises(ValueError, match="'none' cell must run first"):
        method_config("dfn@0.3", world, tmp_path / "x", arch, FULL, n_usable=None)


def test_evaluate_scores_every_task_of_a_checkpoint(world: dict, checkpoint: Path) -> None:
    heldout = clip.HeldOut.load(world)
    assert heldout.images.shape == (384, 3, 32, 32) and len(heldout.captions) == 384
    scores = clip.evaluate(checkpoint, heldout)
    assert set(scores) == {*task_classes(), "retrieval_t2i_r1", "average"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert scores["average"] == pytest.approx(np.mean([v for k, v in scores.items() if k != "average"]))
    assert clip.evaluate(checkpoint, heldout) == scores  # deterministic


@pytest.mark.slow
def test_a_small_benchmark_run_end_to_end(tmp_path: Path) -> None:
    scale = Scale(n_pool=400, n_clean=200, eval_per_concept=1, filter_samples=256, filter_epochs=1, samples=256,
                  epochs=1, seeds=(0,), methods=("none", "random@0.5", "best@0.5"), n_clusters=8)
    results = run(tmp_path / "out", scale)
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == json.loads(json.dumps(results))
    cells = {c["config"]: c for c in results["cells"]}
    assert not any("error" in c for c in cells.values()), cells
    n_usable = cells["none"]["kept"]
    assert n_usable == 400 - sum(results["pool_kinds"][k] for k in ("corrupt", "truncated", "failed_to_download"))
    assert cells["random@0.5"]["kept"] == cells["best@0.5"]["kept"] == round(0.5 * n_usable)
    for cell in cells.values():
        assert sum(cell["composition"].values()) == cell["kept"]
        assert 0.0 <= cell["average"]["mean"] <= 1.0 and len(cell["scores"]) == 1
    best = cells["best@0.5"]["composition"]
    for removed_kind in ("exact_duplicate", "tiny", "extreme_aspect", "short_caption"):
        assert best.get(removed_kind, 0) == 0, removed_kind
    assert best.get("eval_copy", 0) <= 1  # decontaminated against the held-out set (exact + pHash)
    assert cells["random@0.5"]["reused"] == ["ingest"]
    # every model was trained by open_clip_train on the product's export shards
    for config in cells:
        params = (tmp_path / "out" / "logs" / f"{config}-s0" / "params.txt").read_text().splitlines()
        train_data = next(line.split(": ", 1)[1] for line in params if line.startswith("train_data:"))
        assert train_data.startswith(str(tmp_path / "out" / "runs" / config / "export") + "/")
    ET.parse(tmp_path / "out" / "accuracy.svg")
    assert "| best@0.5 |" in (tmp_path / "out" / "results.md").read_text()
