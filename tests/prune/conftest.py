"""One embed + cluster run of the demo pool (examples/demo-dbp.yaml: DBP at keep fraction 0.3),
shared by the pruning tests; composed runs reuse its finished stages by copying their folders
(fingerprints do not depend on the run folder), so each adds only its own steps and export."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.core.config import RunConfig, load_config
from pipeline.core.ledger import check_ledger
from pipeline.core.runner import RunResult, run_pipeline

REPO = Path(__file__).resolve().parents[2]
DEMO_DBP = REPO / "examples" / "demo-dbp.yaml"
SHARED_STAGES = ("ingest", "basic_filter", "exact_dedup", "embed", "cluster")


def demo_dbp_config(demo_dir: Path, run_dir: Path, checkpoint: Path, *overrides: str) -> RunConfig:
    return load_config(DEMO_DBP, [f"input={demo_dir / 'shards'}", f"run_dir={run_dir}",
                                  f"embed.model.pretrained={checkpoint}", *overrides])


@pytest.fixture(scope="session")
def dbp_run(spark, demo_dir: Path, tiny_checkpoint: Path, tmp_path_factory) -> RunResult:
    """The demo DBP config on the test demo pool (400 rows), as `make demo-dbp` runs it."""
    return run_pipeline(demo_dbp_config(demo_dir, tmp_path_factory.mktemp("dbp-run"), tiny_checkpoint))


@pytest.fixture(scope="session")
def compose(spark, dbp_run: RunResult, demo_dir: Path, tiny_checkpoint: Path, tmp_path_factory):
    """compose(steps, *overrides) -> RunResult: a run of other steps after the same basic_filter,
    exact_dedup, embed and cluster (copied from dbp_run, so only the new steps run)."""

    def run(steps: list[str], *overrides: str) -> RunResult:
        run_dir = tmp_path_factory.mktemp("composed")
        for stage in SHARED_STAGES:
            shutil.copytree(run_dir_of(dbp_run) / stage, run_dir / stage)
        cfg = demo_dbp_config(demo_dir, run_dir, tiny_checkpoint, f"steps=[{','.join(steps)}]", *overrides)
        result = run_pipeline(cfg)
        for stage in SHARED_STAGES:
            if stage in result.manifests:
                assert result.manifests[stage]["started_at"] == dbp_run.manifests[stage]["started_at"], stage
        check_ledger(result.ledger)
        return result

    return run


def run_dir_of(run: RunResult) -> Path:
    return Path(run.export_dir).parent


def table(run: RunResult, folder: str) -> pd.DataFrame:
    return pq.read_table(run_dir_of(run) / folder).to_pandas()


def alive_before(run: RunResult, stage: str) -> set[str]:
    """Usable sample_ids that no decision stage before `stage` removed (run order)."""
    samples = table(run, "ingest/parts")
    alive = set(samples.loc[samples["quarantine_reason"].isna(), "sample_id"])
    for name in run.manifests:
        if name == stage:
            return alive
        if (run_dir_of(run) / name / "decisions").is_dir():
            alive -= set(table(run, f"{name}/decisions")["sample_id"])
    raise KeyError(stage)


def pool_before(run: RunResult, stage: str) -> pd.DataFrame:
    """The clustered pool a step chose from: alive samples with their assignment."""
    assignments = table(run, "cluster/assignments")
    return assignments[assignments["sample_id"].isin(alive_before(run, stage))].reset_index(drop=True)


def removed_ids(run: RunResult, stage: str) -> set[str]:
    return set(table(run, f"{stage}/decisions")["sample_id"])
