"""One full run of the demo shared by the output tests: every stage, export with all its options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from pipeline.core.config import RunConfig, config_from_dict
from pipeline.core.runner import RunResult, pipeline_stages, run_pipeline
from pipeline.core.stage import Stage

SAMPLES_PER_SHARD = 50
MAX_SHARD_BYTES = 400_000
N_CLUSTERS = 6


@dataclass
class FullRun:
    cfg: RunConfig
    spark: SparkSession
    result: RunResult

    @property
    def stages(self) -> list[Stage]:
        return pipeline_stages(self.cfg)

    @property
    def manifests(self) -> dict[str, dict[str, Any]]:
        return self.result.manifests

    @property
    def ledger(self) -> dict[str, Any]:
        return self.result.ledger

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.run_dir)

    @property
    def export_dir(self) -> Path:
        return Path(self.result.export_dir)

    @property
    def report(self) -> Path:
        return Path(self.result.report)


def full_config(demo_dir: Path, run_dir: Path, checkpoint: Path) -> dict[str, Any]:
    return {
        "input": str(demo_dir / "shards"),
        "run_dir": str(run_dir),
        "seed": 0,
        "basic_filter": {"min_side": 32},
        "embed": {"enabled": True, "model": {"arch": "curate-tiny", "pretrained": str(checkpoint)}, "batch_size": 48},
        "cluster": {"enabled": True, "n_clusters": N_CLUSTERS, "iterations": 10, "neighbours": 3},
        "export": {"samples_per_shard": SAMPLES_PER_SHARD, "max_shard_bytes": MAX_SHARD_BYTES, "order": "cluster",
                   "include_embeddings": True},
    }


@pytest.fixture(scope="session")
def full_run(spark, demo_dir: Path, tiny_checkpoint: Path, tmp_path_factory) -> FullRun:
    """`run_pipeline` on the demo: ingest, basic_filter, exact_dedup, embed, cluster, export, ledger, report."""
    cfg = config_from_dict(full_config(demo_dir, tmp_path_factory.mktemp("full-run"), tiny_checkpoint))
    return FullRun(cfg, spark, run_pipeline(cfg))
