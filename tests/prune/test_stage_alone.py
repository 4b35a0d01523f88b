"""A stage runs alone from its declared inputs: on a run dir whose earlier stages are done it reads
their tables (nothing is replayed) and decides exactly what the full run decided; with an input
missing it fails before any work; and a new step is one module plus one registry entry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.core.decisions import DecisionStage
from pipeline.core.runner import STEPS, RunResult, pipeline_stages
from pipeline.core.stage import RunContext, run_context
from pipeline.core.tables import MissingTable
from pipeline.prune.select import decisions
from pipeline.stages.dbp import Dbp
from pipeline.stages.exact_dedup import ExactDedup
from tests.prune.conftest import demo_dbp_config, run_dir_of, table


def _decisions(run_dir: Path, stage: str) -> list[dict]:
    rows = pq.read_table(run_dir / stage / "decisions").to_pylist()
    return sorted(rows, key=lambda r: r["sample_id"])


def _started(run_dir: Path) -> dict[str, float]:
    return {p.parent.name: json.loads(p.read_text())["started_at"] for p in run_dir.glob("*/_manifest.json")}


@pytest.fixture()
def copied_run(dbp_run: RunResult, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(run_dir_of(dbp_run), run_dir)
    return run_dir


def test_dbp_and_exact_dedup_alone_decide_what_the_full_run_decided(
    spark, dbp_run: RunResult, copied_run: Path, demo_dir: Path, tiny_checkpoint: Path
) -> None:
    cfg = demo_dbp_config(demo_dir, copied_run, tiny_checkpoint)
    ctx = run_context(cfg, spark, pipeline_stages(cfg))
    want = {name: _decisions(copied_run, name) for name in ("dbp", "exact_dedup")}
    before = _started(copied_run)
    for stage in (Dbp(), ExactDedup()):
        shutil.rmtree(copied_run / stage.name)
        manifest = stage.run(ctx)
        assert manifest["fingerprint"] == dbp_run.manifests[stage.name]["fingerprint"]
        assert _decisions(copied_run, stage.name) == want[stage.name]
    after = _started(copied_run)
    rerun = {name for name in before if after[name] != before[name]}
    assert rerun == {"dbp", "exact_dedup"}  # nothing else ran or was replayed
    assert len(want["dbp"]) == sum(dbp_run.ledger["removed"]["dbp"].values()) > 0
    # each decision stage wrote the pool it keeps once; the last one is what export wrote out
    assert pq.read_table(copied_run / "dbp" / "pool").num_rows == dbp_run.ledger["kept"]


def test_a_missing_input_fails_before_any_work(spark, copied_run: Path, demo_dir: Path,
                                               tiny_checkpoint: Path) -> None:
    cfg = demo_dbp_config(demo_dir, copied_run, tiny_checkpoint)
    ctx = run_context(cfg, spark, pipeline_stages(cfg))
    shutil.rmtree(copied_run / "cluster")
    shutil.rmtree(copied_run / "dbp")
    with pytest.raises(MissingTable, match="cluster stage"):
        Dbp().run(ctx)
    assert not (copied_run / "dbp").exists()


def test_a_context_without_the_stage_list_refuses_to_guess_the_pool(spark, copied_run: Path, demo_dir: Path,
                                                                    tiny_checkpoint: Path) -> None:
    cfg = demo_dbp_config(demo_dir, copied_run, tiny_checkpoint)
    with pytest.raises(ValueError, match="stage list"):
        Dbp().run(RunContext(cfg=cfg, spark=spark), force=True)


class DropOddKeys(DecisionStage):
    """A toy step: removes the samples whose key ends in an odd digit."""

    name = "toy_odd"

    def decide(self, alive: DataFrame, ctx: RunContext) -> DataFrame:
        odd = F.substring(F.col("key"), -1, 1).cast("int") % 2 == 1
        return decisions(alive.where(odd), self.name, "odd_key", None)


def test_a_new_step_is_one_module_and_one_registry_entry(compose, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(STEPS, DropOddKeys.name, DropOddKeys)
    result = compose(["basic_filter", "exact_dedup", "dbp", DropOddKeys.name])
    removed = table(result, "toy_odd/decisions")
    assert len(removed) > 0 and removed["sample_id"].str[-1].astype(int).mod(2).eq(1).all()
    assert result.ledger["removed"][DropOddKeys.name] == {"odd_key": len(removed)}
    exported = [pq.read_table(p).column("sample_id").to_pylist() for p in Path(result.export_dir).glob("*.parquet")]
    kept = {sample_id for shard in exported for sample_id in shard}
    assert len(kept) == result.ledger["kept"] and kept.isdisjoint(removed["sample_id"])
