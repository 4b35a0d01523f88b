"""`curate contain A B` on real shards: itself, disjoint data, and the demo pool's injected eval copies."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.cli import main
from pipeline.containment import measure_containment, scratch_config

LEVELS = ("exact", "perceptual", "semantic")


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    """One output folder for every call, so the scratch ingest/embed runs of a dataset are reused."""
    return tmp_path_factory.mktemp("contain")


@pytest.fixture(scope="module")
def model_config(tmp_path_factory, tiny_checkpoint: Path) -> Path:
    path = tmp_path_factory.mktemp("contain-config") / "contain.yaml"
    path.write_text(yaml.safe_dump({"embed": {"enabled": True, "batch_size": 64,
                                              "model": {"arch": "curate-tiny", "pretrained": str(tiny_checkpoint)}}}))
    return path


@pytest.fixture(scope="module")
def other_pool(tmp_path_factory) -> Path:
    """A second, unrelated demo pool (another seed): 2 shards."""
    from pipeline.demo.generate import make_demo_data

    out = tmp_path_factory.mktemp("other-demo")
    make_demo_data(out, n_samples=50, samples_per_shard=25, n_eval=4, seed=1)
    return out / "shards"


def test_a_dataset_is_fully_contained_in_itself(spark, demo_dir: Path, model_config: Path, out: Path) -> None:
    """All three levels; B's embeddings searched in 3 broadcast chunks of at most 25 rows."""
    eval_set = str(demo_dir / "eval")
    result = measure_containment(eval_set, eval_set, str(out), config=str(model_config), cosine_threshold=0.9999,
                                 chunk_rows=25)
    summary = json.loads((out / "containment.json").read_text())
    assert summary == result.summary and summary["samples"] == summary["b_samples"] == 60
    assert summary["semantic_passes"] == 3
    assert [summary[f"{level}_fraction"] for level in LEVELS] == [1.0, 1.0, 1.0]
    rows = pq.read_table(out / "containment_by_shard.parquet").to_pylist()
    counts = [(r["shard"], r["samples"], r["exact"], r["perceptual"], r["semantic"]) for r in rows]
    assert counts == [("00000", 60, 60, 60, 60)]


def test_disjoint_data_is_not_contained(spark, demo_dir: Path, other_pool: Path, out: Path, capsys) -> None:
    """`curate contain`, exact and perceptual levels (no model config: a random-weight model could
    not tell unrelated renders apart anyway)."""
    assert main(["contain", str(other_pool), str(demo_dir / "eval"), "--out", str(out)]) == 0
    summary = json.loads((out / "containment.json").read_text())
    assert summary["samples"] > 40
    assert [summary[f"{level}_fraction"] for level in LEVELS] == [0.0, 0.0, None]
    rows = pq.read_table(out / "containment_by_shard.parquet").to_pylist()
    assert [r["shard"] for r in rows] == ["00000", "00001"]
    assert all(r["exact"] == r["perceptual"] == 0 and r["semantic"] is None for r in rows)
    assert sum(r["samples"] for r in rows) == summary["samples"]
    printed = capsys.readouterr().out.splitlines()
    assert printed[-2].split() == ["all", str(summary["samples"]), "0.0000", "0.0000", "-"]


def test_eval_set_in_the_pool_counts_the_injected_copies(spark, demo_dir: Path, out: Path) -> None:
    """No model config: exact and perceptual only. The demo pool holds 12 copies of distinct eval
    images, byte-identical or re-encoded."""
    a, b = str(demo_dir / "eval"), str(demo_dir / "shards")
    result = measure_containment(a, b, str(out))
    truth = pq.read_table(demo_dir / "ground_truth.parquet").to_pandas()
    copied = truth.loc[truth["kind"] == "eval_copy", "source_key"]
    assert copied.nunique() == 12

    def usable(spec: str) -> pd.DataFrame:
        parts = pq.read_table(Path(scratch_config(spec, str(out), None).run_dir) / "ingest" / "parts").to_pandas()
        return parts[parts["quarantine_reason"].isna()]

    evals, pool = usable(a), usable(b)
    same_bytes = evals["uid"].isin(pool["uid"]).sum()
    assert 0 < same_bytes < 12
    assert result.summary["exact"] == same_bytes and result.summary["perceptual"] == 12
    assert result.summary["perceptual_fraction"] == pytest.approx(12 / 60)
    assert result.summary["semantic"] is None and result.by_shard.column("semantic").null_count == 1
