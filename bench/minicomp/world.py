"""The Mini-DataComp world: a synthetic pool with known defects, a clean set, and a held-out eval set.

Everything is rendered by `pipeline.demo` (shape x colour x texture x background concepts with a
Zipf frequency, template captions with noise) so nothing is downloaded:

- `pool/`: `pipeline.demo.make_demo_data` output (img2dataset webdataset shards + ground truth):
  exact and near duplicates of earlier pool samples, mismatched captions, corrupt/tiny/extreme-aspect
  images, short captions, copies of `pool/eval/` images (eval leaks), failed downloads;
- `clean/`: clean pairs (uniform over concepts) to train the filtering network on;
- `heldout.npz`: `images` (N, S, S, 3) uint8 and `labels` (N,) int, `n_per_concept` fresh renders of
  every concept, never in the pool; `world.json` names the classes (their index = label).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pipeline.demo.generate import BASE_TIME, RATES, _Builder, make_demo_data, write_shard
from pipeline.demo.render import Concept, concept_catalog, render

HELDOUT_SIZE = 64


def class_prompts(concept: Concept) -> list[str]:
    """Zero-shot prompts for one class (averaged into one text embedding)."""
    c, s = concept.colour, concept.shape
    return [f"a photo of a {c} {s}", f"{c} {s} on {concept.background} background", f"{c} {s}, clip art"]


def build_world(out: str | Path, *, n_pool: int, n_clean: int, n_per_concept: int, seed: int,
                samples_per_shard: int = 250) -> dict:
    """Write the pool, the clean set and the held-out set under `out`; return (and save) a summary."""
    out = Path(out)
    n_eval = max(60, math.ceil(RATES["eval_copy"] * n_pool) + 1)
    pool = make_demo_data(out / "pool", n_samples=n_pool, samples_per_shard=samples_per_shard,
                          n_eval=n_eval, seed=seed)
    catalog = concept_catalog()  # the 48 concepts make_demo_data draws the pool from

    clean_dir = out / "clean"
    clean_dir.mkdir(parents=True, exist_ok=True)
    builder = _Builder(np.random.default_rng(seed + 1), catalog, np.full(len(catalog), 1 / len(catalog)),
                       samples_per_shard)
    clean = [builder.clean() for _ in range(n_clean)]
    n_clean_shards = math.ceil(n_clean / samples_per_shard)
    for shard_id in range(n_clean_shards):
        chunk = clean[shard_id * samples_per_shard:(shard_id + 1) * samples_per_shard]
        write_shard(clean_dir, shard_id, chunk, samples_per_shard, BASE_TIME)

    rng = np.random.default_rng(seed + 2)
    images = np.stack([np.asarray(render(c, HELDOUT_SIZE, HELDOUT_SIZE, rng).convert("RGB"))
                       for c in catalog for _ in range(n_per_concept)])
    labels = np.repeat(np.arange(len(catalog)), n_per_concept)
    np.savez(out / "heldout.npz", images=images, labels=labels)

    summary = {
        "seed": seed,
        "pool": pool,
        "pool_pattern": f"{pool['shards_dir']}/{{00000..{pool['n_shards'] - 1:05d}}}.tar",
        "clean_pattern": f"{clean_dir}/{{00000..{n_clean_shards - 1:05d}}}.tar",
        "n_clean": n_clean,
        "heldout": str(out / "heldout.npz"),
        "n_heldout": int(len(labels)),
        "classes": [c.label for c in catalog],
        "prompts": [class_prompts(c) for c in catalog],
    }
    (out / "world.json").write_text(json.dumps(summary, indent=2))
    return summary
