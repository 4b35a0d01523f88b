"""The Mini-DataComp world: a synthetic pool with known defects, a clean set, and a held-out eval set.

Everything is rendered by `pipeline.demo` so nothing is downloaded. A concept is a (shape, colour,
background) combination (`concept_grid`: 8 x 8 x 6 = 384 concepts, each with its own background
texture), drawn with a long-tailed (Zipf) frequency; captions come from templates with noise.

- `pool/shards/`: the pool to curate, in img2dataset's webdataset layout, with its defects at the
  known rates of `POOL_RATES` (ground truth per row in `pool/ground_truth.parquet`): exact and near
  duplicates (copies of earlier clean pool samples, so concentrated in popular concepts), mismatched
  captions, low-information images (the background without its object), corrupt, truncated, tiny
  and extreme-aspect images, one-word captions, copies of held-out images (eval leaks), failed
  downloads;
- `pool/eval/`: the held-out evaluation set, `eval_per_concept` fresh renders of every concept
  (labels in `pool/eval_ground_truth.parquet`); the pool's eval leaks are copies of these images;
- `clean/`: clean pairs, uniform over concepts, to train the filtering network on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline.demo.generate import BASE_TIME, _Builder, make_demo_data, write_shard
from pipeline.demo.render import BACKGROUNDS, COLOURS, SHAPES, Concept, concept_grid

# A web-like pool: most pairs are noisy. What DFN-style filtering can find (mismatched captions,
# low-information images) is 35 %; duplicates 12 %, leaks 3 %, broken or odd images 8 %.
POOL_RATES = {
    "exact_duplicate": 0.06,
    "near_duplicate": 0.06,
    "mismatched_caption": 0.25,
    "low_information": 0.10,
    "corrupt": 0.01,
    "truncated": 0.01,
    "tiny": 0.02,
    "extreme_aspect": 0.02,
    "short_caption": 0.03,
    "eval_copy": 0.03,
    "failed_to_download": 0.02,
}
ZIPF_EXPONENT = 1.0  # concept frequency ~ rank ** -1: a long tail


def task_classes() -> dict[str, list[str]]:
    """Zero-shot classification tasks: the concept (384-way) and each of its attributes."""
    return {
        "concept": [c.label for c in concept_grid()],
        "shape": list(SHAPES),
        "colour": list(COLOURS),
        "background": list(BACKGROUNDS),
    }


def class_prompts(task: str, name: str) -> list[str]:
    """Zero-shot prompts for one class of a task (their embeddings are averaged)."""
    if task == "concept":
        c = _by_label()[name]
        return [f"a photo of a {c.colour} {c.shape}", f"{c.colour} {c.shape} on {c.background} background",
                f"{c.colour} {c.shape}, clip art"]
    if task == "shape":
        return [f"a photo of a {name}", f"a {name}, clip art", f"simple {name} drawing"]
    if task == "colour":
        return [f"a {name} shape", f"something {name}, clip art", f"a photo of a {name} object"]
    if task == "background":
        return [f"a shape on {name} background", f"clip art, {name} backdrop", f"a drawing over {name}"]
    raise ValueError(f"unknown task {task!r}")


def _by_label() -> dict[str, Concept]:
    return {c.label: c for c in concept_grid()}


def task_labels(concepts: list[str]) -> dict[str, np.ndarray]:
    """Per task, the class index of each held-out image (given its concept label)."""
    classes = task_classes()
    by_label = _by_label()
    attribute = {"concept": lambda c: c.label, "shape": lambda c: c.shape, "colour": lambda c: c.colour,
                 "background": lambda c: c.background}
    return {task: np.array([names.index(attribute[task](by_label[label])) for label in concepts])
            for task, names in classes.items()}


def build_world(out: str | Path, *, n_pool: int, n_clean: int, eval_per_concept: int, seed: int,
                samples_per_shard: int = 500) -> dict:
    """Write the pool, the held-out set and the clean set under `out`; return (and save) a summary."""
    out = Path(out)
    catalog = concept_grid()
    pool = make_demo_data(out / "pool", n_samples=n_pool, samples_per_shard=samples_per_shard, seed=seed,
                          catalog=catalog, rates=POOL_RATES, zipf_exponent=ZIPF_EXPONENT,
                          eval_per_concept=eval_per_concept)

    clean_dir = out / "clean"
    clean_dir.mkdir(parents=True, exist_ok=True)
    builder = _Builder(np.random.default_rng(seed + 1), catalog, np.full(len(catalog), 1 / len(catalog)),
                       samples_per_shard)
    clean = [builder.clean() for _ in range(n_clean)]
    n_clean_shards = math.ceil(n_clean / samples_per_shard)
    for shard_id in range(n_clean_shards):
        chunk = clean[shard_id * samples_per_shard:(shard_id + 1) * samples_per_shard]
        write_shard(clean_dir, shard_id, chunk, samples_per_shard, BASE_TIME)

    summary = {
        "seed": seed,
        "pool": pool,
        "rates": POOL_RATES,
        "zipf_exponent": ZIPF_EXPONENT,
        "n_concepts": len(catalog),
        "pool_pattern": f"{pool['shards_dir']}/{{00000..{pool['n_shards'] - 1:05d}}}.tar",
        "clean_pattern": f"{clean_dir}/{{00000..{n_clean_shards - 1:05d}}}.tar",
        "n_clean": n_clean,
        "heldout_tar": f"{pool['eval_dir']}/00000.tar",
        "heldout_concepts": pq.read_table(out / "pool" / "eval_ground_truth.parquet").column("concept").to_pylist(),
    }
    (out / "world.json").write_text(json.dumps(summary, indent=2))
    return summary
