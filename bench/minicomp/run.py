"""Mini-DataComp: curate a synthetic pool with the product under several configs, train a small CLIP
from scratch on each output (open_clip_train, same samples seen), and compare zero-shot top-1.

    python -m bench.minicomp.run --quick --out build/minicomp-quick
    python -m bench.minicomp.run --out build/minicomp

Writes `<out>/results.json`, `<out>/results.md` and `<out>/accuracy.svg`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.minicomp import clip
from bench.minicomp.plot import write_svg
from bench.minicomp.world import build_world
from pipeline.core.config import config_from_dict
from pipeline.core.runner import run_pipeline


@dataclass(frozen=True)
class Scale:
    n_pool: int
    n_clean: int
    n_per_concept: int
    filter_samples: int  # samples per epoch of the filtering network
    filter_epochs: int
    samples: int  # samples per epoch of every benchmark training run
    epochs: int
    seeds: tuple[int, ...]
    methods: tuple[str, ...] = field(default=())


QUICK = Scale(n_pool=2000, n_clean=1000, n_per_concept=5, filter_samples=1024, filter_epochs=3,
              samples=1024, epochs=2, seeds=(0,),
              methods=("none", "random@0.3", "dfn@0.3", "semdedup", "best@0.3"))
FULL = Scale(n_pool=3000, n_clean=2000, n_per_concept=10, filter_samples=2048, filter_epochs=3,
             samples=1024, epochs=2, seeds=(0, 1, 2),
             methods=("none", "random@0.1", "random@0.3", "random@0.5", "semdedup", "dfn@0.1", "dfn@0.3",
                      "dfn@0.5", "dbp@0.3", "ssp@0.3", "best@0.1", "best@0.3", "best@0.5"))


def method_config(method: str, pool_dir: str, run_dir: Path, model_arch: str) -> dict:
    """The product's run config for one benchmark cell ("name" or "name@keep_fraction")."""
    name, _, frac = method.partition("@")
    keep = float(frac) if frac else None
    base = {
        "input": pool_dir, "run_dir": str(run_dir), "seed": 0,
        "basic_filter": {"min_side": 32},
        "embed": {"enabled": True, "model": {"arch": model_arch}, "batch_size": 64},
        "cluster": {"enabled": True, "n_clusters": 16, "neighbours": 5},
        "export": {"samples_per_shard": 250},
    }
    steps = {
        "none": [],
        "random": ["random"],
        "semdedup": ["semdedup"],
        "dfn": ["dfn"],
        "dbp": ["dbp"],
        "ssp": ["ssp"],
        # Defect filters first, then DFN's top fraction of what is left. SemDeDup is left out: at the
        # default eps=0.05 it kept 114 of 2,000 samples with this weak embedding model (quick run).
        "best": ["basic_filter", "exact_dedup", "dfn"],
        "filters+semdedup+dfn": ["basic_filter", "exact_dedup", "semdedup", "dfn"],
    }[name]
    base["steps"] = steps
    for step in ("random", "dbp", "ssp"):
        if step in steps:
            base[step] = {"keep_fraction": keep}
    if "dfn" in steps:
        base["dfn"] = {"top_fraction": keep}
    base["embed"]["enabled"] = bool(set(steps) - {"random"})
    base["cluster"]["enabled"] = bool(set(steps) & {"semdedup", "dbp", "ssp"})
    return base


def run(out: Path, scale: Scale) -> dict:
    """Build the world, train the filtering network, then curate + train + evaluate every cell."""
    t0 = time.time()
    if out.exists():
        shutil.rmtree(out)
    world = build_world(out / "world", n_pool=scale.n_pool, n_clean=scale.n_clean,
                        n_per_concept=scale.n_per_concept, seed=0)
    timings = {"world_s": round(time.time() - t0, 1)}
    t = time.time()
    filter_ckpt = clip.train(world["clean_pattern"], samples_per_epoch=scale.filter_samples,
                             epochs=scale.filter_epochs, logs=out / "logs", name="filter", seed=0)
    filter_arch = clip.export_local_dir(filter_ckpt, out / "filter-model")
    filter_acc = clip.zero_shot_top1(filter_ckpt, world["heldout"], world["prompts"])
    timings["filter_s"] = round(time.time() - t, 1)
    print(f"filter network: zero-shot top-1 {filter_acc:.3f} ({timings['filter_s']} s)", flush=True)

    cells = []
    for method in scale.methods:
        t = time.time()
        cell = {"method": method.partition("@")[0], "config": method}
        try:
            cfg = config_from_dict(method_config(method, world["pool"]["shards_dir"], out / "runs" / method,
                                                 filter_arch))
            result = run_pipeline(cfg)
        except Exception as exc:  # a step that fails is recorded, and the benchmark goes on
            cell["error"] = f"{type(exc).__name__}: {exc}"
            print(f"{method}: curation failed: {cell['error']}", flush=True)
            cells.append(cell)
            continue
        kept = result.ledger.get("kept", None)
        cell["kept"] = kept
        cell["keep_fraction"] = None if kept is None else kept / scale.n_pool
        cell["curate_s"] = round(time.time() - t, 1)
        pattern = result.pattern  # absolute: <run_dir>/export/{00000..NNNNN}.tar
        if not pattern:
            cell["error"] = "curation kept no sample"
            cells.append(cell)
            continue
        accs = []
        for seed in scale.seeds:
            ckpt = clip.train(pattern, samples_per_epoch=scale.samples, epochs=scale.epochs,
                              logs=out / "logs", name=f"{method}-s{seed}", seed=seed)
            accs.append(clip.zero_shot_top1(ckpt, world["heldout"], world["prompts"]))
        cell["top1"] = accs
        cell["mean"] = statistics.fmean(accs)
        cell["std"] = statistics.stdev(accs) if len(accs) > 1 else 0.0
        cell["total_s"] = round(time.time() - t, 1)
        print(f"{method}: kept {kept}, top-1 {accs} ({cell['total_s']} s)", flush=True)
        cells.append(cell)
    timings["total_s"] = round(time.time() - t0, 1)
    results = {
        "scale": scale.__dict__ | {"seeds": list(scale.seeds), "methods": list(scale.methods)},
        "samples_seen": scale.samples * scale.epochs,
        "n_classes": len(world["classes"]),
        "n_heldout": world["n_heldout"],
        "pool_kinds": world["pool"]["kinds"],
        "filter_top1": filter_acc,
        "cells": cells,
        "timings": timings,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown_table(results))
    write_svg(cells, out / "accuracy.svg", chance=1 / len(world["classes"]))
    return results


def markdown_table(results: dict) -> str:
    """The results as a Markdown table (mean +- std over seeds)."""
    lines = [
        f"Samples seen per training run: {results['samples_seen']}; held-out: {results['n_heldout']} images, "
        f"{results['n_classes']} classes (chance {1 / results['n_classes']:.3f}); "
        f"filtering network top-1 {results['filter_top1']:.3f}.",
        "",
        "| config | kept | keep fraction | zero-shot top-1 (mean ± std) | per seed |",
        "|---|---|---|---|---|",
    ]
    for c in results["cells"]:
        if "error" in c:
            lines.append(f"| {c['config']} | – | – | failed: {c['error'][:120]} | – |")
            continue
        seeds = ", ".join(f"{a:.3f}" for a in c["top1"])
        lines.append(f"| {c['config']} | {c['kept']} | {c['keep_fraction']:.3f} | "
                     f"{c['mean']:.3f} ± {c['std']:.3f} | {seeds} |")
    lines += ["", f"Timings (s): {results['timings']}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/minicomp"))
    parser.add_argument("--quick", action="store_true", help="1 seed, 5 configs (< 10 min on 2 idle cores)")
    parser.add_argument("--seeds", help="comma-separated training seeds, e.g. 0,1,2 (default: the scale's)")
    parser.add_argument("--methods", help="comma-separated configs, e.g. random@0.3,dfn@0.3 (default: the scale's)")
    args = parser.parse_args()
    scale = QUICK if args.quick else FULL
    if args.seeds:
        scale = replace(scale, seeds=tuple(int(s) for s in args.seeds.split(",")))
    if args.methods:
        scale = replace(scale, methods=tuple(args.methods.split(",")))
    results = run(args.out, scale)
    print(markdown_table(results))


if __name__ == "__main__":
    main()
