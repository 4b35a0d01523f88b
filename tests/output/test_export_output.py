"""Export with every option on the full demo run: per-sample metadata, cluster order, shard caps,
the output manifest, and a rerun that replaces every shard."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from braceexpand import braceexpand

from pipeline.core.stage import run_context
from pipeline.export.layout import sample_bytes
from pipeline.export.manifest import output_config_hash
from pipeline.stages.export import Export
from tests.output.conftest import MAX_SHARD_BYTES, SAMPLES_PER_SHARD, FullRun

TAR_RECORD = 10240  # tarfile pads an archive to a multiple of this


def read_dir(path: Path) -> dict[str, dict]:
    return {r["sample_id"]: r for r in pq.read_table(path).to_pylist()}


def tar_samples(export_dir: Path) -> list[dict]:
    """Every sample of the output, in shard and key order, as webdataset reads it."""
    pattern = str(export_dir / json.loads((export_dir / "manifest.json").read_text())["pattern"])
    return list(wds.WebDataset(pattern, shardshuffle=False))


def test_each_sample_carries_cluster_clip_score_and_passed_steps(full_run: FullRun) -> None:
    run_dir = full_run.run_dir
    assignments = read_dir(run_dir / "cluster" / "assignments")
    embeddings = read_dir(run_dir / "embed" / "parts")
    samples = tar_samples(full_run.export_dir)
    assert len(samples) == full_run.ledger["kept"]
    for sample in samples:
        meta = json.loads(sample["json"])
        sid = meta["sample_id"]
        assert meta["cluster_id"] == assignments[sid]["cluster_id"]
        assert meta["clip_score"] == embeddings[sid]["clip_score"]
        assert meta["passed"] == ["basic_filter", "exact_dedup"]
        assert "image_emb" not in meta and "text_emb" not in meta


def test_parquet_rows_equal_json_records_plus_embeddings(full_run: FullRun) -> None:
    embeddings = read_dir(full_run.run_dir / "embed" / "parts")
    by_key = {json.loads(s["json"])["key"]: json.loads(s["json"]) for s in tar_samples(full_run.export_dir)}
    rows = [r for p in sorted(full_run.export_dir.glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert len(rows) == len(by_key)
    for row in rows:
        image_emb, text_emb = row.pop("image_emb"), row.pop("text_emb")
        assert {**row, "source": json.loads(row["source"])} == by_key[row["key"]]  # source: JSON text in Parquet
        emb = embeddings[row["sample_id"]]
        np.testing.assert_array_equal(np.float32(image_emb), np.float32(emb["image_emb"]))
        np.testing.assert_array_equal(np.float32(text_emb), np.float32(emb["text_emb"]))


def test_cluster_order_groups_by_cluster_with_a_seeded_order_inside(full_run: FullRun) -> None:
    metas = [json.loads(s["json"]) for s in tar_samples(full_run.export_dir)]
    clusters = [m["cluster_id"] for m in metas]
    assert clusters == sorted(clusters) and len(set(clusters)) == full_run.cfg.cluster.n_clusters
    seed = full_run.cfg.seed
    for cluster in set(clusters):
        ids = [m["sample_id"] for m in metas if m["cluster_id"] == cluster]
        assert ids == sorted(ids, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
        assert ids != sorted(ids)  # not source order


def test_shards_respect_the_sample_and_byte_caps(full_run: FullRun) -> None:
    stats = full_run.manifests["export"]["counts"]["shards"]
    kept = full_run.ledger["kept"]
    samples = read_dir(full_run.run_dir / "ingest" / "parts")
    exported = [samples[json.loads(s["json"])["sample_id"]] for s in tar_samples(full_run.export_dir)]
    largest = int(sample_bytes(pa.Table.from_pylist(exported)).max())
    assert len(stats) > math.ceil(kept / SAMPLES_PER_SHARD)  # the byte cap cut shards too
    for s in stats:
        assert 0 < s["count"] <= SAMPLES_PER_SHARD
        assert s["bytes"] <= MAX_SHARD_BYTES + largest + TAR_RECORD, s
    counts = [s["count"] for s in stats]
    assert min(counts) >= SAMPLES_PER_SHARD // 4, counts  # equal pieces: no one-sample remainders


def test_manifest_lists_every_shard_with_checksums_and_provenance(full_run: FullRun) -> None:
    export_dir = full_run.export_dir
    manifest = json.loads((export_dir / "manifest.json").read_text())
    tars = sorted(p.name for p in export_dir.glob("*.tar"))
    assert list(braceexpand(manifest["pattern"])) == tars == [s["shard"] for s in manifest["shards"]]
    for entry in manifest["shards"]:
        data = (export_dir / entry["shard"]).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["bytes"], entry["sha256"])
        assert pq.read_metadata(export_dir / entry["parquet"]).num_rows == entry["count"]
        assert json.loads((export_dir / entry["shard"].replace(".tar", "_stats.json")).read_text()) == {
            k: entry[k] for k in ("shard", "count", "bytes", "sha256")}
    assert json.loads((export_dir / "sizes.json").read_text()) == {s["shard"]: s["count"] for s in manifest["shards"]}
    assert manifest["count"] == full_run.ledger["kept"]
    assert manifest["bytes"] == sum(len((export_dir / t).read_bytes()) for t in tars)
    assert manifest["config_hash"] == output_config_hash(full_run.cfg)
    assert manifest["input_fingerprint"] == full_run.manifests["ingest"]["input_fingerprint"]
    upstream = [s.name for s in full_run.stages if s.name != "export"]
    assert manifest["stage_fingerprints"] == {name: full_run.manifests[name]["fingerprint"] for name in upstream}


def test_rerun_with_other_shards_replaces_every_shard(full_run: FullRun, tmp_path: Path) -> None:
    """Copy the finished run, rerun export with fewer, larger shards: only the new shards remain."""
    run_dir = tmp_path / "run"
    shutil.copytree(full_run.run_dir, run_dir)
    export = replace(full_run.cfg.export, samples_per_shard=1000, max_shard_bytes=None, order="shuffle",
                     include_embeddings=False)
    ctx = run_context(replace(full_run.cfg, run_dir=str(run_dir), export=export), full_run.spark, full_run.stages)
    for stage in full_run.stages[:-1]:
        assert stage.is_up_to_date(ctx)
    counts = Export().run(ctx)["counts"]
    out = run_dir / "export"
    assert sorted(p.name for p in out.glob("*.tar")) == ["00000.tar"]
    assert sorted(p.name for p in out.glob("*.parquet")) == ["00000.parquet"]
    assert sorted(p.name for p in out.glob("*_stats.json")) == ["00000_stats.json"]
    assert counts["kept"] == full_run.ledger["kept"] and (out / "_SUCCESS").exists()
    assert json.loads((out / "sizes.json").read_text()) == {"00000.tar": full_run.ledger["kept"]}
    row = pq.read_table(out / "00000.parquet").slice(0, 1).to_pylist()[0]
    assert row["image_emb"] is None and row["cluster_id"] is not None
