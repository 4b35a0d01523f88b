"""Mini-DataComp: curate a synthetic pool with the product (`curate run`, one config file per cell),
train a small CLIP from scratch on each output (open_clip_train, same samples seen), and compare
zero-shot scores.

    python -m bench.minicomp.run --quick --out build/minicomp-quick
    python -m bench.minicomp.run --out build/minicomp

Writes `<out>/results.json`, `<out>/results.md` and `<out>/accuracy.svg`.
"""

from __future__ import annotations

import argparse
import glob
import json
import shutil
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from bench.minicomp import clip
from bench.minicomp.plot import write_svg
from bench.minicomp.world import build_world, task_classes
from pipeline import cli
from pipeline.core.config import RunConfig, config_from_dict
from pipeline.core.runner import pipeline_stages


@dataclass(frozen=True)
class Scale:
    """Sizes of one benchmark run."""

    n_pool: int
    n_clean: int
    eval_per_concept: int
    filter_samples: int  # samples per epoch of the filtering network
    filter_epochs: int
    samples: int  # samples per epoch of every benchmark training run
    epochs: int
    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    n_clusters: int = 64


QUICK = Scale(n_pool=3000, n_clean=2000, eval_per_concept=2, filter_samples=4096, filter_epochs=4,
              samples=4096, epochs=2, seeds=(0,), methods=("none", "random@0.3", "dfn@0.3", "best@0.3"))
FULL = Scale(n_pool=8000, n_clean=4000, eval_per_concept=4, filter_samples=4096, filter_epochs=8,
             samples=4096, epochs=4, seeds=(0, 1, 2),
             methods=("none", "random@0.1", "random@0.3", "random@0.5", "semdedup@0.5", "dfn@0.1", "dfn@0.3",
                      "dfn@0.5", "dbp@0.3", "ssp@0.3", "best@0.1", "best@0.3", "best@0.5"))
# Defect filters, dedup and decontamination against the held-out set, then the DFN score's best.
BEST_STEPS = ["basic_filter", "exact_dedup", "phash_dedup", "decontaminate", "dfn"]


def method_config(method: str, world: dict, run_dir: Path, model_arch: str, scale: Scale,
                  n_usable: int | None) -> dict:
    """The product's run config for one cell: "name" or "name@f", f a fraction of the `n_usable`
    samples left after ingest (so every method at the same f keeps the same number)."""
    name, _, frac = method.partition("@")
    steps = {"none": [], "random": ["random"], "semdedup": ["semdedup"], "dfn": ["dfn"], "dbp": ["dbp"],
             "ssp": ["ssp"], "best": BEST_STEPS}[name]
    cfg = {
        "input": world["pool"]["shards_dir"], "run_dir": str(run_dir), "seed": 0, "steps": steps,
        "basic_filter": {"min_side": 32},
        "embed": {"enabled": name not in ("none", "random"), "model": {"arch": model_arch}, "batch_size": 128},
        "cluster": {"enabled": name in ("semdedup", "dbp", "ssp"), "n_clusters": scale.n_clusters, "neighbours": 5},
        "decontaminate": {"eval_sets": [world["pool"]["eval_dir"]], "methods": ["exact", "phash"]},
        "export": {"samples_per_shard": 1000},
    }
    if frac:
        if n_usable is None:
            raise ValueError(f"{method}: the 'none' cell must run first (it counts the usable samples)")
        keep = round(float(frac) * n_usable)
        cfg[{"best": "dfn"}.get(name, name)] = {"keep_count": keep}
    return cfg


def reuse_finished_stages(cfg: RunConfig, earlier: list[tuple[Path, list[str]]]) -> list[str]:
    """Copy into this cell's run folder the finished stage folders of an earlier cell (run folder,
    planned stages) that planned the same stages up to that one. The runner keeps a copy only when
    its fingerprint is the one this run would give (same config, same upstream) and recomputes it
    otherwise, so this saves time and changes no output. Returns the copied names."""
    plan = [s.name for s in pipeline_stages(cfg)]
    copied = []
    for i, name in enumerate(plan):
        target = Path(cfg.run_dir) / name
        if name == "export" or target.exists():
            continue
        for run_dir, their_plan in earlier:
            if their_plan[:i + 1] == plan[:i + 1] and (run_dir / name / "_SUCCESS").exists():
                shutil.copytree(run_dir / name, target)
                copied.append(name)
                break
    return copied


def composition(run_dir: Path, ground_truth: str) -> dict[str, int]:
    """How many kept samples of each ground-truth kind the cell's export holds."""
    truth = {(r["shard"], r["key"]): r["kind"] for r in pq.read_table(ground_truth).to_pylist()}
    kinds: Counter = Counter()
    for path in sorted(glob.glob(f"{run_dir}/export/*.parquet")):
        for r in pq.read_table(path, columns=["source_shard", "orig_key"]).to_pylist():
            kinds[truth[(r["source_shard"], r["orig_key"])]] += 1
    return dict(sorted(kinds.items()))


def chance_scores() -> dict[str, float]:
    """What a random model scores on each task (retrieval: 1 / number of concepts)."""
    classes = task_classes()
    chance = {task: 1 / len(names) for task, names in classes.items()}
    chance["retrieval_t2i_r1"] = 1 / len(classes["concept"])
    chance["average"] = sum(chance.values()) / len(chance)
    return chance


def curate(config: dict, path: Path) -> tuple[dict, str]:
    """`curate run <path>` with `config` written to `path`, as a user runs it; (ledger, the export's
    shard pattern, empty when nothing was kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=True))
    code = cli.main(["run", str(path)])
    if code != 0:
        raise RuntimeError(f"curate run {path} exited with {code}")
    export = Path(config["run_dir"]) / "export"
    ledger = json.loads((Path(config["run_dir"]) / "ledger.json").read_text())
    pattern = json.loads((export / "manifest.json").read_text())["pattern"]
    return ledger, f"{export}/{pattern}" if pattern else ""


def run_cell(method: str, world: dict, out: Path, filter_arch: str, scale: Scale, heldout: clip.HeldOut,
             n_usable: int | None, earlier: list[tuple[Path, list[str]]]) -> dict:
    """Curate with one config, train one model per seed on its export, evaluate each."""
    t = time.time()
    cell: dict = {"method": method.partition("@")[0], "config": method}
    run_dir = out / "runs" / method
    config = method_config(method, world, run_dir, filter_arch, scale, n_usable)
    cfg = config_from_dict(config)
    cell["steps"] = [s.name for s in pipeline_stages(cfg)]
    cell["reused"] = reuse_finished_stages(cfg, earlier)
    ledger, pattern = curate(config, out / "configs" / f"{method}.yaml")
    cell["kept"] = ledger["kept"]
    cell["composition"] = composition(run_dir, world["pool"]["ground_truth"])
    cell["curate_s"] = round(time.time() - t, 1)
    if not pattern:
        cell["error"] = "curation kept no sample"
        return cell
    cell["scores"] = []
    for seed in scale.seeds:
        ckpt = clip.train(pattern, samples_per_epoch=scale.samples, epochs=scale.epochs,
                          logs=out / "logs", name=f"{method}-s{seed}", seed=seed)
        cell["scores"].append(clip.evaluate(ckpt, heldout))
    for metric in cell["scores"][0]:
        values = [s[metric] for s in cell["scores"]]
        cell[metric] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    cell["total_s"] = round(time.time() - t, 1)
    return cell


def run(out: Path, scale: Scale) -> dict:
    """Build the world, train the filtering network, then curate + train + evaluate every cell."""
    t0 = time.time()
    if out.exists():
        shutil.rmtree(out)
    world = build_world(out / "world", n_pool=scale.n_pool, n_clean=scale.n_clean,
                        eval_per_concept=scale.eval_per_concept, seed=0)
    heldout = clip.HeldOut.load(world)
    timings = {"world_s": round(time.time() - t0, 1)}
    print(f"world: {scale.n_pool} pool rows {world['pool']['kinds']}, {len(heldout.captions)} held-out images "
          f"({timings['world_s']} s)", flush=True)

    t = time.time()
    filter_ckpt = clip.train(world["clean_pattern"], samples_per_epoch=scale.filter_samples,
                             epochs=scale.filter_epochs, logs=out / "logs", name="filter", seed=0)
    filter_arch = clip.export_local_dir(filter_ckpt, out / "filter-model")
    filter_scores = clip.evaluate(filter_ckpt, heldout)
    timings["filter_s"] = round(time.time() - t, 1)
    print(f"filtering network: {fmt_scores(filter_scores)} ({timings['filter_s']} s)", flush=True)

    methods = ["none", *[m for m in scale.methods if m != "none"]]
    cells, earlier, n_usable = [], [], None
    for method in methods:
        try:
            cell = run_cell(method, world, out, filter_arch, scale, heldout, n_usable, earlier)
        except Exception as exc:  # a failed cell is recorded, and the benchmark goes on
            cell = {"method": method.partition("@")[0], "config": method, "error": f"{type(exc).__name__}: {exc}"}
        if method == "none":
            n_usable = cell.get("kept")
        cell["keep_fraction"] = cell["kept"] / n_usable if n_usable and "kept" in cell else None
        if "steps" in cell:
            earlier.append((out / "runs" / method, cell["steps"]))
        cells.append(cell)
        print(f"{method}: " + (cell["error"] if "error" in cell else
                               f"kept {cell['kept']}, {fmt_scores({m: cell[m]['mean'] for m in cell['scores'][0]})} "
                               f"(curate {cell['curate_s']} s, total {cell['total_s']} s)"), flush=True)
    timings["total_s"] = round(time.time() - t0, 1)
    results = {
        "scale": asdict(scale),
        "samples_seen": scale.samples * scale.epochs,
        "n_usable": n_usable,
        "n_heldout": len(heldout.captions),
        "n_concepts": world["n_concepts"],
        "pool_kinds": world["pool"]["kinds"],
        "chance": chance_scores(),
        "filter": filter_scores,
        "cells": cells,
        "timings": timings,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown_report(results))
    write_svg(cells, out / "accuracy.svg", chance=results["chance"]["average"])
    return results


def fmt_scores(scores: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in scores.items())


def markdown_report(results: dict) -> str:
    """The results as Markdown: the score table (mean ± std over seeds) and what each cell kept."""
    metrics = list(results["chance"])
    lines = [
        f"Samples seen per training run: {results['samples_seen']}; usable pool after ingest: "
        f"{results['n_usable']}; held-out: {results['n_heldout']} images of {results['n_concepts']} concepts.",
        f"Filtering network: {fmt_scores(results['filter'])}.",
        f"Chance: {fmt_scores(results['chance'])}.",
        "",
        "| config | kept | fraction | " + " | ".join(metrics) + " |",
        "|---|---|---|" + "---|" * len(metrics),
    ]
    for c in results["cells"]:
        if "error" in c:
            lines.append(f"| {c['config']} | – | – | failed: {c['error'][:160]} |")
            continue
        values = " | ".join(f"{c[m]['mean']:.3f} ± {c[m]['std']:.3f}" for m in metrics)
        lines.append(f"| {c['config']} | {c['kept']} | {c['keep_fraction']:.3f} | {values} |")
    kinds = list(results["pool_kinds"])
    lines += ["", "Kept samples by ground-truth kind:", "",
              "| config | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for c in results["cells"]:
        if "composition" in c:
            lines.append(f"| {c['config']} | " + " | ".join(str(c["composition"].get(k, 0)) for k in kinds) + " |")
    lines += ["", "Per seed (average): " + "; ".join(
        f"{c['config']} " + ", ".join(f"{s['average']:.3f}" for s in c["scores"])
        for c in results["cells"] if "scores" in c), "", f"Timings (s): {results['timings']}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/minicomp"))
    parser.add_argument("--quick", action="store_true", help="1 seed, 4 configs (< 10 min on 2 idle cores)")
    parser.add_argument("--seeds", help="comma-separated training seeds, e.g. 0,1,2 (default: the scale's)")
    parser.add_argument("--methods", help="comma-separated configs, e.g. random@0.3,dfn@0.3 (default: the scale's)")
    parser.add_argument("--pool", type=int, help="pool rows (default: the scale's)")
    args = parser.parse_args()
    scale = QUICK if args.quick else FULL
    if args.seeds:
        scale = replace(scale, seeds=tuple(int(s) for s in args.seeds.split(",")))
    if args.methods:
        scale = replace(scale, methods=tuple(args.methods.split(",")))
    if args.pool:
        scale = replace(scale, n_pool=args.pool)
    results = run(args.out, scale)
    print(markdown_report(results))


if __name__ == "__main__":
    main()
