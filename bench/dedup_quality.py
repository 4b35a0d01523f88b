"""Dedup and decontamination quality on the demo pool, against its ground truth.

Writes `curate demo-data` output (injected exact duplicates, resized/re-encoded near-duplicates and
copies of the eval set), then runs the pipeline with exact_dedup -> phash_dedup -> decontaminate ->
semdedup (embeddings from the tiny open_clip model, random weights), and a second run with semdedup
alone on the whole pool. Prints, per method, what it removed with precision and recall, and each
stage's wall time.

Scoring. Duplicates: the ground truth groups each injected copy with its source; a removal is
correct when the sample it names as matched is in its group (the methods keep one of each group, so
recall = correct removals, at most |group| - 1 per group, over sum(|group| - 1)). Exact and pHash
dedup are scored against their own kind (exact_duplicate, near_duplicate), semdedup alone against
both, and semdedup after the other steps against the copies still there when it ran.
Decontamination: a match is correct when the pool sample is an eval_copy and the eval sample named
is its source; recall is over all eval copies. Each decontamination method is scored on its own
matches (`decontaminate/matches/`), the decisions on the first method that matched.

    python bench/dedup_quality.py --out build/bench-dedup --samples 600
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, not bench/pipeline.py

import argparse
import json
import shutil
from collections import Counter

import pandas as pd
import pyarrow.parquet as pq

from pipeline.core.config import config_from_dict
from pipeline.core.runner import RunResult, run_pipeline
from pipeline.demo.generate import make_demo_data
from pipeline.models import make_tiny_checkpoint

DUPLICATE_KINDS = ("exact_duplicate", "near_duplicate")


def read(run: RunResult, *parts: str) -> pd.DataFrame:
    return pq.read_table(Path(run.export_dir).parent.joinpath(*parts)).to_pandas()


def duplicate_scores(removed: pd.DataFrame, truth: pd.DataFrame, kinds: tuple[str, ...]) -> tuple[int, float, float]:
    """(removed, precision, recall) of removals (sample_id, matched_sample_id) against the
    ground-truth groups of the injected copies of `kinds`."""
    copies = truth[truth["kind"].isin(kinds)]
    group = {sid: sid for sid in truth.index} | dict(zip(copies.index, copies["source"]))
    correct = [group[s] for s, m in zip(removed["sample_id"], removed["matched_sample_id"])
               if s != m and group[s] == group.get(m)]
    sizes = Counter(copies["source"])  # copies per group; the group holds one more (the source)
    covered = sum(min(n, sizes[g]) for g, n in Counter(correct).items())
    return len(removed), _ratio(len(correct), len(removed)), _ratio(covered, sum(sizes.values()))


def eval_scores(matched: pd.DataFrame, truth: pd.DataFrame, eval_dir: Path) -> tuple[int, float, float]:
    """(matched, precision, recall) of (sample_id, eval id) matches against the injected eval copies."""
    copies = truth[truth["kind"] == "eval_copy"]
    want = {sid: f"eval:{eval_dir}/{src.removeprefix('eval/')}" for sid, src in zip(copies.index, copies["source"])}
    correct = sum(want.get(s) == e for s, e in zip(matched["sample_id"], matched["eval_id"]))
    return len(matched), _ratio(correct, len(matched)), _ratio(correct, len(want))


def _ratio(a: int, b: int) -> float:
    return a / b if b else float("nan")


def stage_seconds(run: RunResult, names: tuple[str, ...]) -> str:
    return "  ".join(f"{n} {run.manifests[n]['seconds']:.1f}s" for n in names if n in run.manifests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="build/bench-dedup")
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clusters", type=int, default=8)
    parser.add_argument("--eps", type=float, default=0.05, help="semdedup.eps")
    parser.add_argument("--cosine-threshold", type=float, default=0.95, help="decontaminate.cosine_threshold")
    args = parser.parse_args()

    out = Path(args.out).resolve()
    for run_dir in ("run", "run-semdedup"):  # fresh runs: every stage's wall time is measured here
        shutil.rmtree(out / run_dir, ignore_errors=True)
    demo = make_demo_data(out / "demo", n_samples=args.samples, seed=args.seed)
    eval_dir = Path(demo["eval_dir"])
    checkpoint = make_tiny_checkpoint(out / "tiny.pt", seed=0)
    truth = pq.read_table(demo["ground_truth"]).to_pandas()
    truth.index = truth["shard"] + "/" + truth["key"]
    truth["source"] = truth["source_shard"] + "/" + truth["source_key"]

    base = {
        "input": demo["shards_dir"],
        "seed": args.seed,
        "embed": {"enabled": True, "model": {"arch": "curate-tiny", "pretrained": str(checkpoint)}, "batch_size": 64},
        "cluster": {"enabled": True, "n_clusters": args.clusters, "sample_size": 50 * args.clusters, "iterations": 10},
        "decontaminate": {"eval_sets": [str(eval_dir)], "cosine_threshold": args.cosine_threshold},
        "semdedup": {"eps": args.eps, "keep": "hard"},
        "export": {"samples_per_shard": 1000},
    }
    chain = run_pipeline(config_from_dict({**base, "run_dir": str(out / "run"),
                                           "steps": ["exact_dedup", "phash_dedup", "decontaminate", "semdedup"]}))
    alone = run_pipeline(config_from_dict({**base, "run_dir": str(out / "run-semdedup"), "steps": ["semdedup"]}))

    earlier = pd.concat([read(chain, stage, "decisions")["sample_id"]
                         for stage in ("exact_dedup", "phash_dedup", "decontaminate")])
    matches = read(chain, "decontaminate", "matches")
    decont = read(chain, "decontaminate", "decisions").rename(columns={"matched_sample_id": "eval_id"})
    rows = [
        ("exact_dedup vs exact_duplicate", duplicate_scores(read(chain, "exact_dedup", "decisions"), truth,
                                                            ("exact_duplicate",))),
        ("phash_dedup vs near_duplicate", duplicate_scores(read(chain, "phash_dedup", "decisions"), truth,
                                                           ("near_duplicate",))),
        *[(f"decontaminate {m} vs eval_copy", eval_scores(matches[matches["method"] == m], truth, eval_dir))
          for m in ("exact", "phash", "semantic")],
        ("decontaminate exact+phash vs eval_copy", eval_scores(
            matches[matches["method"].isin(["exact", "phash"])].drop_duplicates("sample_id"), truth, eval_dir)),
        ("decontaminate decisions vs eval_copy", eval_scores(decont, truth, eval_dir)),
        ("semdedup after the above vs copies left", duplicate_scores(read(chain, "semdedup", "decisions"),
                                                                     truth.drop(earlier), DUPLICATE_KINDS)),
        ("semdedup alone vs copies", duplicate_scores(read(alone, "semdedup", "decisions"), truth, DUPLICATE_KINDS)),
    ]
    kinds = truth["kind"].value_counts()
    print(f"dedup quality: demo pool of {args.samples} (seed {args.seed}): "
          + ", ".join(f"{k} {kinds.get(k, 0)}" for k in (*DUPLICATE_KINDS, "eval_copy"))
          + f"; tiny random-weight model, semdedup eps {args.eps}, decontaminate cosine >= {args.cosine_threshold}")
    print(f"{'method':<42}{'removed':>8}{'precision':>11}{'recall':>8}")
    for name, (n, precision, recall) in rows:
        print(f"{name:<42}{n:>8}{precision:>11.3f}{recall:>8.3f}")
    print("stage wall time (chain): " + stage_seconds(chain, tuple(chain.manifests)))
    print("stage wall time (semdedup alone): " + stage_seconds(alone, ("embed", "cluster", "semdedup")))
    print("ledger (chain): " + json.dumps(chain.ledger["removed"]))


if __name__ == "__main__":
    main()
