"""exact_dedup -> phash_dedup -> decontaminate -> semdedup through the real pipeline on the demo pool
(tiny open_clip model, real Spark, FAISS and files), checked against the pool's ground truth."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.core.config import SemDedupConfig, config_from_dict
from pipeline.core.runner import RunResult, pipeline_stages, run_pipeline
from pipeline.core.stage import run_context
from pipeline.stages.semdedup import SemDedup
from tests.dedup.test_semdedup import reference

SEMDEDUP = {"eps": 0.0005, "keep": "hard", "block_size": 16}  # the tiny model's cosines are all ~0.99


def run_config(run: RunResult) -> dict:
    """The run's resolved config, as written in its run folder."""
    return yaml.safe_load((Path(run.export_dir).parent / "config.yaml").read_text())


@pytest.fixture(scope="module")
def run(spark, demo_dir: Path, tiny_checkpoint: Path, tmp_path_factory) -> RunResult:
    cfg = {
        "input": str(demo_dir / "shards"),
        "run_dir": str(tmp_path_factory.mktemp("dedup-run")),
        "steps": ["exact_dedup", "phash_dedup", "decontaminate", "semdedup"],
        "embed": {"enabled": True, "model": {"arch": "curate-tiny", "pretrained": str(tiny_checkpoint)},
                  "batch_size": 64},
        "cluster": {"enabled": True, "n_clusters": 6, "sample_size": 300, "iterations": 8},
        "decontaminate": {"eval_sets": [str(demo_dir / "eval")], "cosine_threshold": 0.9999},
        "semdedup": SEMDEDUP,
        "export": {"samples_per_shard": 200},
    }
    return run_pipeline(config_from_dict(cfg))


def table(run: RunResult, *parts: str) -> pd.DataFrame:
    return pq.read_table(Path(run.export_dir).parent.joinpath(*parts)).to_pandas()


@pytest.fixture(scope="module")
def truth(demo_dir: Path) -> pd.DataFrame:
    gt = pq.read_table(demo_dir / "ground_truth.parquet").to_pandas()
    gt["sample_id"] = gt["shard"] + "/" + gt["key"]
    gt["source"] = gt["source_shard"] + "/" + gt["source_key"]
    return gt.set_index("sample_id")


@pytest.fixture(scope="module")
def decisions(run: RunResult) -> dict[str, pd.DataFrame]:
    return {stage: table(run, stage, "decisions").set_index("sample_id")
            for stage in ("exact_dedup", "phash_dedup", "decontaminate", "semdedup")}


def test_ledger_balances(run: RunResult) -> None:
    ledger = run.ledger
    removed = {stage: sum(reasons.values()) for stage, reasons in ledger["removed"].items()}
    assert ledger["input"] == ledger["kept"] + sum(removed.values()) + sum(ledger["quarantined"].values())
    assert all(removed[s] > 0 for s in ("exact_dedup", "phash_dedup", "decontaminate", "semdedup")), removed


def test_every_resized_or_reencoded_copy_is_removed_and_names_its_source(decisions, truth) -> None:
    phash = decisions["phash_dedup"]
    near = truth[truth["kind"] == "near_duplicate"]
    assert len(near) == 20
    for sample_id, row in near.iterrows():
        assert sample_id in phash.index, sample_id
        assert phash.loc[sample_id, "matched_sample_id"] == row["source"]
        assert phash.loc[sample_id, "reason"] == "near_duplicate" and 0 <= phash.loc[sample_id, "score"] <= 4
    assert set(truth.loc[phash.index, "kind"]) == {"near_duplicate"}  # no distinct image removed here


def test_injected_eval_copies_are_removed_naming_the_eval_sample(decisions, truth, run, demo_dir) -> None:
    removed = decisions["decontaminate"]
    copies = truth[truth["kind"] == "eval_copy"]
    assert len(copies) == 12 and set(removed.index) == set(copies.index)
    samples = table(run, "ingest", "parts").set_index("sample_id")
    evals = table(run, "decontaminate", "eval_samples").set_index("eval_id")
    assert len(evals) == 60
    for sample_id, row in copies.iterrows():
        decision = removed.loc[sample_id]
        assert decision["matched_sample_id"] == f"eval:{demo_dir / 'eval'}/{row['source'].removeprefix('eval/')}"
        exact = samples.loc[sample_id, "uid"] == evals.loc[decision["matched_sample_id"], "uid"]
        assert decision["reason"] == ("eval_exact" if exact else "eval_phash")
        assert decision["matched_uid"] == evals.loc[decision["matched_sample_id"], "uid"]
    matches = table(run, "decontaminate", "matches")
    semantic = matches[matches["method"] == "semantic"].set_index("sample_id")
    assert set(semantic.index) == set(copies.index) and (semantic["score"] >= 0.9999).all()
    assert set(matches.loc[matches["method"] == "phash", "sample_id"]) == set(copies.index)


def test_semdedup_equals_the_direct_rule_on_the_same_clusters(run, decisions) -> None:
    assignments = table(run, "cluster", "assignments")
    embeddings = table(run, "embed", "parts")
    samples = table(run, "ingest", "parts")
    gone = set().union(*(decisions[s].index for s in ("exact_dedup", "phash_dedup", "decontaminate")))
    alive = samples[samples["quarantine_reason"].isna() & ~samples["sample_id"].isin(gone)]
    rows = (assignments[assignments["sample_id"].isin(alive["sample_id"])]
            .merge(embeddings[["sample_id", "image_emb", "text_emb"]], on="sample_id"))
    assert len(rows) == len(alive) > 250
    want = {}
    for _, cluster in rows.groupby("cluster_id"):
        want.update(reference(cluster.reset_index(drop=True), SemDedupConfig(**SEMDEDUP), seed=0))
    got = decisions["semdedup"]
    assert 0 < len(want) < len(rows) / 2
    assert {k: v[0] for k, v in want.items()} == got["matched_sample_id"].to_dict()
    assert (got["reason"] == "semantic_duplicate").all()
    for sample_id, (_, score) in want.items():
        assert got.loc[sample_id, "score"] == pytest.approx(score, abs=1e-9)


def test_semdedup_keep_count_is_the_eps_cut_that_keeps_that_many(spark, run, decisions, tmp_path: Path) -> None:
    """Removing the samples most similar to an earlier one, down to a keep count, removes what the
    eps rule removes when the count is the one eps kept."""
    compared = run.manifests["semdedup"]["counts"]["compared"]
    want = decisions["semdedup"]
    cfg = config_from_dict({**run_config(run), "semdedup": {**SEMDEDUP, "keep_count": compared - len(want)}})
    ctx = run_context(cfg, spark, pipeline_stages(cfg)).for_stage("semdedup")
    counts = SemDedup().execute(ctx, str(tmp_path))
    got = pq.read_table(tmp_path / "decisions").to_pandas().set_index("sample_id")
    assert set(got.index) == set(want.index) and counts["removed"] == {"semantic_duplicate": len(want)}
    assert counts["keep"]["n_keep"] == compared - len(want)
    # the largest eps with the same cut: >= the eps used, and every removed cosine is above 1 - it
    assert counts["eps_equivalent"] >= SEMDEDUP["eps"] and want["score"].min() > 1 - counts["eps_equivalent"]
    assert got.loc[want.index, "matched_sample_id"].equals(want["matched_sample_id"])
