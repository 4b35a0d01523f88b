"""Crashes lose nothing: SIGKILL the driver in the middle of each stage, rerun, and the output and the
ledger are byte-identical to an uninterrupted run; kill a standalone cluster's executor mid-stage and
Spark's task retry finishes the run with the same output."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.core.config import config_from_dict
from pipeline.core.runner import run_pipeline
from pipeline.verify import verify_run
from tests.reliability.standalone import ROOT, kill_group, start_standalone

pytestmark = pytest.mark.slow

SHARD_TASK_STAGES = ("ingest", "embed")  # killed only once a shard has finished, so truly mid-stage


def output_digests(run_dir: Path) -> dict[str, str]:
    """sha256 of every output file (shards, Parquet, stats, sizes, manifest) and of the ledger."""
    files = [p for p in sorted((run_dir / "export").iterdir()) if p.suffix in (".tar", ".parquet", ".json")]
    files = [p for p in files if p.name != "_manifest.json"]  # the stage manifest holds timings
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in [*files, run_dir / "ledger.json"]}


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    from pipeline.demo.generate import make_demo_data

    out = tmp_path_factory.mktemp("crash-pool")
    make_demo_data(out, n_samples=200, samples_per_shard=25, seed=0)
    return out / "shards"


@pytest.fixture(scope="module")
def crash_config(pool: Path, tiny_checkpoint: Path):
    def config(run_dir: Path) -> Path:
        data = {
            "input": str(pool),
            "run_dir": str(run_dir),
            "seed": 0,
            "basic_filter": {"min_side": 32},
            "embed": {"enabled": True, "model": {"arch": "curate-tiny", "pretrained": str(tiny_checkpoint)},
                      "batch_size": 16},
            "export": {"samples_per_shard": 20},
        }
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        path = run_dir.parent / f"{run_dir.name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return config


@pytest.fixture(scope="module")
def reference(spark, crash_config, tmp_path_factory) -> dict[str, str]:
    """The uninterrupted run's output digests."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = run_pipeline(config_from_dict(yaml.safe_load(crash_config(run_dir).read_text())))
    assert [name for name in result.manifests] == ["ingest", "basic_filter", "exact_dedup", "embed", "export"]
    return output_digests(run_dir)


def mid_stage(stage_dir: Path) -> bool:
    """The stage has started and not finished (for shard-task stages: at least one shard is done)."""
    if not stage_dir.is_dir() or (stage_dir / "_SUCCESS").exists():
        return False
    return stage_dir.name not in SHARD_TASK_STAGES or any((stage_dir / "shard_stats").glob("*.json"))


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"run ended (rc {proc.returncode}) before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.mark.parametrize("stage", ["ingest", "basic_filter", "exact_dedup", "embed", "export"])
def test_driver_killed_mid_stage_rerun_matches(stage: str, crash_config, reference, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(crash_config(run_dir))]
    with (tmp_path / "killed.log").open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: mid_stage(run_dir / stage), proc, f"the middle of {stage}")
    finally:
        kill_group(proc, signal.SIGKILL)
    assert not (run_dir / stage / "_SUCCESS").exists(), f"{stage} finished before the kill landed"
    assert not (run_dir / "ledger.json").exists()

    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = "resuming an interrupted attempt" if stage in SHARD_TASK_STAGES else "running"
    assert f"stage {stage}: {resumed}" in rerun.stderr
    assert output_digests(run_dir) == reference
    assert verify_run(str(run_dir)).ok


def test_executor_killed_mid_stage_on_a_standalone_cluster(crash_config, reference, tmp_path: Path) -> None:
    cluster = start_standalone(tmp_path / "cluster")
    try:
        run_dir = tmp_path / "run"
        job = cluster.submit([str(ROOT / "jobs" / "curate.py"), "--config", str(crash_config(run_dir))],
                             tmp_path / "submit.log", conf={"spark.sql.shuffle.partitions": "8"})
        try:
            wait_for(lambda: mid_stage(run_dir / "ingest") and cluster.executor_pids(), job, "the middle of ingest")
            (victim,) = cluster.executor_pids()
            subprocess.run(["kill", "-9", str(victim)], check=True)
            assert not (run_dir / "ingest" / "_SUCCESS").exists()
            assert job.wait(timeout=600) == 0, (tmp_path / "submit.log").read_text()[-3000:]
        finally:
            kill_group(job)
        executors = sorted(p.name for p in cluster.work_dir.glob("app-*/*"))
        assert len(executors) >= 2, f"no executor was relaunched: {executors}"
        assert output_digests(run_dir) == reference
        assert verify_run(str(run_dir)).ok
    finally:
        cluster.stop()
