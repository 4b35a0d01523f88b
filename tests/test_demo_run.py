"""End to end on the demo pool: ingest -> basic filter -> exact dedup -> export, read back for real."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
import yaml

from pipeline.core.config import config_from_dict
from pipeline.core.runner import RunResult, plan_pipeline, run_pipeline


def demo_config(demo_dir: Path, run_dir: Path, **extra) -> dict:
    return {
        "input": str(demo_dir / "shards"),
        "run_dir": str(run_dir),
        "seed": 0,
        "basic_filter": {"min_side": 32},
        "export": {"samples_per_shard": 100},
        **extra,
    }


def file_digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.suffix in (".tar", ".parquet", ".json") and not p.name.startswith("_manifest")
    }


def export_table(run: RunResult) -> pa.Table:
    """All output Parquet files (the folder also holds img2dataset-style `_stats.json` files)."""
    return pa.concat_tables(pq.read_table(p) for p in sorted(Path(run.export_dir).glob("*.parquet")))


@pytest.fixture(scope="module")
def demo_run(spark, demo_dir: Path, tmp_path_factory) -> RunResult:
    return run_pipeline(config_from_dict(demo_config(demo_dir, tmp_path_factory.mktemp("run"))))


@pytest.fixture(scope="module")
def truth(demo_dir: Path) -> dict[str, dict]:
    rows = pq.read_table(demo_dir / "ground_truth.parquet").to_pylist()
    return {f"{r['shard']}/{r['key']}": r for r in rows}


@pytest.fixture(scope="module")
def samples(demo_run: RunResult) -> dict[str, dict]:
    table = pq.read_table(Path(demo_run.export_dir).parent / "ingest" / "parts")
    return {r["sample_id"]: r for r in table.to_pylist()}


def test_ledger_balances_and_counts_every_input_row(demo_run: RunResult, truth: dict) -> None:
    ledger = demo_run.ledger
    removed = sum(sum(v.values()) for v in ledger["removed"].values())
    assert ledger["input"] == len(truth)
    assert ledger["input"] == ledger["kept"] + removed + sum(ledger["quarantined"].values())


def test_quarantine_reasons_match_injected_defects(samples: dict, truth: dict) -> None:
    for sample_id, row in truth.items():
        reason = samples[sample_id]["quarantine_reason"]
        if row["kind"] in ("corrupt", "truncated"):
            assert reason in ("decode_error", "empty_image"), (sample_id, reason)
        elif row["kind"] == "failed_to_download":
            assert reason == "failed_to_download"
        else:
            assert reason is None, (sample_id, row["kind"], reason)


def test_exact_duplicates_leave_one_copy(demo_run: RunResult, samples: dict, truth: dict) -> None:
    kept = {r["sample_id"] for r in export_table(demo_run).to_pylist()}
    dups = [(sid, f"{r['source_shard']}/{r['source_key']}") for sid, r in truth.items() if r["kind"] == "exact_duplicate"]
    assert dups
    for dup, source in dups:
        assert samples[dup]["uid"] == samples[source]["uid"]
        if truth[source]["kind"] == "clean" and truth[dup]["caption"] and len(truth[dup]["caption"].split()) >= 3:
            assert (dup in kept) + (source in kept) == 1, (dup, source)
    exact = demo_run.ledger["removed"]["exact_dedup"]["exact_duplicate"]
    assert exact >= len(dups) * 0.8


def test_basic_filter_removes_tiny_and_extreme_aspect(demo_run: RunResult, truth: dict) -> None:
    kept = {r["sample_id"] for r in export_table(demo_run).to_pylist()}
    for sample_id, row in truth.items():
        if row["kind"] in ("tiny", "extreme_aspect", "short_caption"):
            assert sample_id not in kept, (sample_id, row["kind"])


def test_output_reads_back_with_webdataset_and_pyarrow(demo_run: RunResult) -> None:
    ds = wds.WebDataset(demo_run.pattern, shardshuffle=False).decode("pil").to_tuple("jpg;png;webp", "txt", "json")
    seen = []
    for image, caption, meta in ds:
        assert image.size == (meta["width"], meta["height"])
        assert caption == meta["caption"]
        seen.append(meta["uid"])
    table = export_table(demo_run)
    assert len(seen) == table.num_rows == demo_run.ledger["kept"]
    assert len(set(seen)) == len(seen)
    assert sorted(seen) == sorted(table.column("uid").to_pylist())


def test_jpeg_samples_read_with_the_plain_jpg_tuple(demo_run: RunResult) -> None:
    ds = wds.WebDataset(demo_run.pattern, shardshuffle=False).select(lambda s: "jpg" in s)
    pairs = list(ds.decode("pil").to_tuple("jpg", "txt"))
    assert pairs and all(isinstance(c, str) and c for _, c in pairs)


def test_exported_bytes_are_the_original_bytes(demo_run: RunResult, samples: dict) -> None:
    for sample in wds.WebDataset(demo_run.pattern, shardshuffle=False):
        ext = next(e for e in ("jpg", "png", "webp") if e in sample)
        sample_id = json.loads(sample["json"])["sample_id"]
        assert hashlib.sha256(sample[ext]).hexdigest() == samples[sample_id]["uid"]


def test_same_seed_gives_byte_identical_output(spark, demo_dir: Path, demo_run: RunResult, tmp_path: Path) -> None:
    again = run_pipeline(config_from_dict(demo_config(demo_dir, tmp_path / "again")))
    assert file_digests(Path(again.export_dir)) == file_digests(Path(demo_run.export_dir))
    assert (Path(again.export_dir).parent / "ledger.json").read_bytes() == (
        Path(demo_run.export_dir).parent / "ledger.json"
    ).read_bytes()


def test_rerun_skips_finished_stages_and_config_change_reruns_downstream(
    spark, demo_dir: Path, tmp_path: Path, caplog
) -> None:
    cfg = demo_config(demo_dir, tmp_path / "run")
    first = run_pipeline(config_from_dict(cfg))
    caplog.set_level("INFO", logger="curate")
    second = run_pipeline(config_from_dict(cfg))
    assert all(m["started_at"] == first.manifests[k]["started_at"] for k, m in second.manifests.items())
    changed = run_pipeline(config_from_dict({**cfg, "basic_filter": {"min_side": 80}}))
    assert changed.manifests["ingest"]["started_at"] == first.manifests["ingest"]["started_at"]
    for stage in ("basic_filter", "exact_dedup", "export"):
        assert changed.manifests[stage]["started_at"] > first.manifests[stage]["started_at"]
    assert changed.ledger["kept"] < first.ledger["kept"]


def test_killed_after_ingest_rerun_skips_ingest_and_matches(demo_dir: Path, demo_run: RunResult, tmp_path: Path) -> None:
    """SIGKILL the real `curate run` once ingest has committed, rerun, compare with an uninterrupted run."""
    run_dir = tmp_path / "killed"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(demo_config(demo_dir, run_dir)))
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(config)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (run_dir / "ingest" / "_SUCCESS").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended or hung before ingest finished"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "export" / "_SUCCESS").exists()
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "stage ingest: up to date, skipped" in rerun.stderr
    assert file_digests(run_dir / "export") == file_digests(Path(demo_run.export_dir))


def test_dry_run_after_a_run_plans_every_stage_as_up_to_date(demo_run: RunResult, demo_dir: Path) -> None:
    run_dir = Path(demo_run.export_dir).parent
    cfg = config_from_dict(demo_config(demo_dir, run_dir))
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    plan = plan_pipeline(cfg)
    assert [p.name for p in plan] == list(demo_run.manifests)
    assert all(p.action == "skip" for p in plan)
    assert all(p.fingerprint == demo_run.manifests[p.name]["fingerprint"] for p in plan)
    changed = plan_pipeline(config_from_dict(demo_config(demo_dir, run_dir, export={"samples_per_shard": 7})))
    assert [p.action for p in changed] == ["skip"] * (len(plan) - 1) + ["run"]
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before
