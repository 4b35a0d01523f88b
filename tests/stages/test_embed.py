"""Embed stage on the demo pool with the tiny model loaded from a saved checkpoint."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from pipeline.core import io as pio
from pipeline.core.config import config_from_dict
from pipeline.core.runner import RunResult, run_pipeline
from pipeline.core.stage import PENDING
from pipeline.models import ModelSpec, load_clip


def embed_config(demo_dir: Path, run_dir: Path, checkpoint: Path, **embed) -> dict:
    return {
        "input": str(demo_dir / "shards"),
        "run_dir": str(run_dir),
        "basic_filter": {"min_side": 32},
        "export": {"samples_per_shard": 100},
        "embed": {"enabled": True, "model": {"arch": "curate-tiny", "pretrained": str(checkpoint)},
                  "batch_size": 48, **embed},
    }


@pytest.fixture(scope="module")
def embed_run(spark, demo_dir: Path, tiny_checkpoint: Path, tmp_path_factory) -> RunResult:
    run_dir = tmp_path_factory.mktemp("embed-run")
    return run_pipeline(config_from_dict(embed_config(demo_dir, run_dir, tiny_checkpoint)))


def read_dir(path: Path) -> dict[str, dict]:
    return {r["sample_id"]: r for r in pq.read_table(path).to_pylist()}


def test_embeddings_equal_a_direct_forward_pass(embed_run: RunResult, tiny_checkpoint: Path) -> None:
    run_dir = Path(embed_run.export_dir).parent
    emb = read_dir(run_dir / "embed" / "parts")
    samples = read_dir(run_dir / "ingest" / "parts")
    assert len(emb) == embed_run.manifests["embed"]["counts"]["embedded"] > 200
    clip = load_clip(ModelSpec(arch="curate-tiny", pretrained=str(tiny_checkpoint)))
    ids = sorted(emb)[::7]
    images, captions = [], []
    for sid in ids:
        s = samples[sid]
        with open(s["shard"], "rb") as f:
            f.seek(s["image_offset"])
            images.append(clip.preprocess(Image.open(io.BytesIO(f.read(s["image_bytes"]))).convert("RGB")))
        captions.append(s["caption"] or "")
    with torch.inference_mode():
        img = torch.nn.functional.normalize(clip.model.encode_image(torch.stack(images)), dim=-1).numpy()
        txt = torch.nn.functional.normalize(clip.model.encode_text(clip.tokenizer(captions)), dim=-1).numpy()
    got_img = np.array([emb[s]["image_emb"] for s in ids])
    got_txt = np.array([emb[s]["text_emb"] for s in ids])
    assert np.min(np.sum(got_img * img, axis=1)) > 0.999
    assert np.min(np.sum(got_txt * txt, axis=1)) > 0.999
    scores = np.array([emb[s]["clip_score"] for s in ids])
    np.testing.assert_allclose(scores, np.sum(got_img * got_txt, axis=1), atol=1e-5)


def test_ledger_balances_with_embed(embed_run: RunResult) -> None:
    ledger = embed_run.ledger
    removed = sum(sum(v.values()) for v in ledger["removed"].values())
    assert ledger["removed"]["embed"] == {}
    assert ledger["input"] == ledger["kept"] + removed + sum(ledger["quarantined"].values())


def test_interrupted_embed_redoes_only_unfinished_units(
    spark, embed_run: RunResult, demo_dir: Path, tiny_checkpoint: Path
) -> None:
    run_dir = Path(embed_run.export_dir).parent
    out = run_dir / "embed"
    before = {p.name: p.read_bytes() for p in (out / "parts").iterdir()}
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "parts").iterdir()}
    # The state a crash mid-stage leaves: no manifest, one unit's output missing, the pending mark.
    fingerprint = pio.read_json(str(out / "_manifest.json"))["fingerprint"]
    assert embed_run.manifests["embed"]["counts"]["units"] > embed_run.manifests["embed"]["counts"]["shards"]
    unit = sorted(before)[3].removesuffix(".parquet")
    for name in ("_SUCCESS", "_manifest.json", f"shard_stats/{unit}.json", f"parts/{unit}.parquet"):
        (out / name).unlink()
    pio.write_json_atomic(str(out / PENDING), {"fingerprint": fingerprint})
    cfg = config_from_dict(embed_config(demo_dir, run_dir, tiny_checkpoint))
    result = run_pipeline(cfg)
    after = {p.name: p.read_bytes() for p in (out / "parts").iterdir()}
    assert after == before
    changed = [n for n, p in ((p.name, p) for p in (out / "parts").iterdir()) if p.stat().st_mtime_ns != mtimes[n]]
    assert changed == [f"{unit}.parquet"]
    assert result.ledger == embed_run.ledger
