"""Precomputed embeddings in the clip-retrieval layout replace the model; later stages run on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.config import config_from_dict
from pipeline.core.runner import run_pipeline


def write_clip_retrieval(root: Path, urls: list[str], dim: int, parts: int, seed: int) -> dict[str, np.ndarray]:
    """img_emb/img_emb_<i>.npy, text_emb/text_emb_<i>.npy, metadata/metadata_<i>.parquet."""
    rng = np.random.default_rng(seed)
    vectors = {}
    for folder in ("img_emb", "text_emb", "metadata"):
        (root / folder).mkdir(parents=True)
    for i, chunk in enumerate(np.array_split(np.array(urls, dtype=object), parts)):
        img = rng.normal(size=(len(chunk), dim)).astype(np.float32)
        txt = rng.normal(size=(len(chunk), dim)).astype(np.float32)
        np.save(root / "img_emb" / f"img_emb_{i}.npy", img)
        np.save(root / "text_emb" / f"text_emb_{i}.npy", txt)
        pq.write_table(pa.table({"url": list(chunk), "caption": ["x"] * len(chunk)}),
                       root / "metadata" / f"metadata_{i}.parquet")
        for url, a, b in zip(chunk, img, txt):
            vectors[url] = (a / np.linalg.norm(a), b / np.linalg.norm(b))
    return vectors


def test_clip_retrieval_import(spark, demo_dir: Path, tmp_path: Path) -> None:
    shard_tables = [pq.read_table(p) for p in sorted((demo_dir / "shards").glob("*.parquet"))]
    urls = sorted(u for t in shard_tables for u in t.column("url").to_pylist())
    missing = set(urls[::25])
    vectors = write_clip_retrieval(tmp_path / "emb", [u for u in urls if u not in missing], dim=16, parts=3, seed=1)
    cfg = config_from_dict({
        "input": str(demo_dir / "shards"),
        "run_dir": str(tmp_path / "run"),
        "basic_filter": {"min_side": 32},
        "embed": {"enabled": True, "precomputed": str(tmp_path / "emb"), "join_on": "url"},
    })
    result = run_pipeline(cfg)
    ledger = result.ledger
    removed = sum(sum(v.values()) for v in ledger["removed"].values())
    assert ledger["input"] == ledger["kept"] + removed + sum(ledger["quarantined"].values())
    no_emb = ledger["removed"]["embed"]["no_embedding"]
    assert 0 < no_emb <= len(missing)
    samples = {r["sample_id"]: r for r in pq.read_table(tmp_path / "run" / "ingest" / "parts").to_pylist()}
    emb = pq.read_table(tmp_path / "run" / "embed" / "parts").to_pylist()
    assert len(emb) == result.manifests["embed"]["counts"]["embedded"]
    for row in emb:
        img, txt = vectors[samples[row["sample_id"]]["url"]]
        np.testing.assert_allclose(row["image_emb"], img, atol=1e-6)
        np.testing.assert_allclose(row["clip_score"], float(img @ txt), atol=1e-5)
    assert not {samples[r["sample_id"]]["url"] for r in emb} & missing
