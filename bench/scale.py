"""Load bench: time per stage, peak memory, and how time grows with N.

    python bench/scale.py                                   # 1e4,3e4,1e5 samples; 1e6,2e6,4e6 embeddings
    python bench/scale.py --sizes 2e3,6e3 --emb-sizes 1e5,2e5 --k 100   # a quick smoke run

Part 1 (ingest -> export): img2dataset-format shards of N distinct 32x32 JPEGs with 3-word captions
(2,500 per shard; ~1% exact duplicates, ~1% with a one-word caption) run through the real
`run_pipeline` (ingest, basic_filter, exact_dedup, export) in a fresh local Spark session per N.
Part 2 (model-free stages): a synthetic run folder with N SAMPLES rows and N `--dim`-d unit image
embeddings (as ingest and embed would have written them) goes through basic_filter, exact_dedup,
cluster and any `--steps` given (e.g. semdedup), each by its real `Stage.run`.

Each N runs in a child process that samples its process tree every 0.2 s: the driver's own VmHWM,
the Spark JVM's VmHWM (driver + local executors), and the summed RSS of the Python workers (peak of
the sum, and the largest single worker). Stage times come from the stage manifests; `stages` is
their sum, `wall` also counts starting Spark, the ledger and the report. The growth exponent b is
the least-squares slope of log t = a + b log N over the sizes (b = 1: linear).
Generated inputs are kept under --workdir and reused.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PER_SHARD = 2_500
EMB_ROWS_PER_FILE = 250_000
WORDS = ("red", "blue", "small", "large", "cat", "dog", "house", "tree", "car", "boat", "sky", "river")


# ---------------------------------------------------------------- inputs


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    tar.addfile(info, io.BytesIO(data))


def make_shards(out: Path, n: int, seed: int = 0) -> Path:
    """img2dataset-format shards (tar + parquet + _stats.json) of n samples; reused if present."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    done = out / "_generated.json"
    if done.exists() and json.loads(done.read_text()) == {"n": n, "seed": seed}:
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for shard in range(math.ceil(n / PER_SHARD)):
        rows, buf = [], io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for i in range(shard * PER_SHARD, min(n, (shard + 1) * PER_SHARD)):
                key = f"{i:09d}"
                source = i - 7 if i % 100 == 7 else i  # ~1% exact duplicates of an earlier image
                pixels = np.random.default_rng([seed, source]).integers(0, 256, (32, 32, 3), dtype=np.uint8)
                jpeg = io.BytesIO()
                Image.fromarray(pixels).save(jpeg, "JPEG", quality=90)
                words = 1 if i % 100 == 13 else 3
                caption = " ".join(rng.choice(WORDS, words))
                meta = {"key": key, "url": f"https://example.invalid/{key}.jpg", "caption": caption,
                        "status": "success"}
                _tar_member(tar, f"{key}.jpg", jpeg.getvalue())
                _tar_member(tar, f"{key}.json", json.dumps(meta).encode())
                _tar_member(tar, f"{key}.txt", caption.encode())
                rows.append(meta)
        name = f"{shard:05d}"
        (out / f"{name}.tar").write_bytes(buf.getvalue())
        pq.write_table(pa.Table.from_pylist(rows), out / f"{name}.parquet")
        (out / f"{name}_stats.json").write_text(json.dumps({"count": len(rows), "successes": len(rows)}))
    done.write_text(json.dumps({"n": n, "seed": seed}))
    return out


def make_synthetic_run(run_dir: Path, n: int, dim: int, seed: int = 0) -> None:
    """`ingest/parts` (SAMPLES) and `embed/parts` (EMBEDDINGS) of n rows, as the stages would write
    them: ~1% duplicate uids, ~2% images under 200 px, unit image embeddings around 2,000 concepts
    (no text embeddings)."""
    import pyarrow as pa

    from pipeline.core import io as pio
    from schemas import EMBEDDINGS, SAMPLES

    done = run_dir / "_generated.json"
    if done.exists() and json.loads(done.read_text()) == {"n": n, "dim": dim, "seed": seed}:
        return
    centres = np.random.default_rng(seed).standard_normal((2_000, dim)).astype(np.float32)
    captions = [f"{a} {b} {c}" for a in WORDS for b in WORDS for c in WORDS]
    for part, start in enumerate(range(0, n, EMB_ROWS_PER_FILE)):
        rows = min(EMB_ROWS_PER_FILE, n - start)
        rng = np.random.default_rng([seed, part])
        ids = np.arange(start, start + rows)
        source = np.where(ids % 100 == 7, ids - 7, ids)
        uids = [hashlib.sha256(int(s).to_bytes(8, "little")).hexdigest() for s in source]
        sample_ids = [f"{i // PER_SHARD:05d}/{i:09d}" for i in ids]
        side = np.where(ids % 50 == 3, 100, 256).astype(np.int32)
        samples = {
            "sample_id": sample_ids, "uid": uids, "shard": [f"/synthetic/{s[:5]}.tar" for s in sample_ids],
            "shard_name": [s[:5] for s in sample_ids], "key": [s[6:] for s in sample_ids],
            "caption": [captions[i] for i in rng.integers(0, len(captions), rows)], "url": [None] * rows,
            "image_ext": ["jpg"] * rows, "image_offset": ids * 4096, "image_bytes": np.full(rows, 3000),
            "width": side, "height": side, "phash": rng.integers(-(2**63), 2**63 - 1, rows, dtype=np.int64),
            "quarantine_reason": [None] * rows,
        }
        pio.write_parquet_atomic(str(run_dir / "ingest" / "parts" / f"{part:05d}.parquet"),
                                 pa.Table.from_pydict(samples, schema=SAMPLES))
        x = centres[rng.integers(0, len(centres), rows)] + rng.standard_normal((rows, dim), dtype=np.float32) * 0.05
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), dim).cast(pa.list_(pa.float32()))
        emb = {"sample_id": sample_ids, "uid": uids, "image_emb": vectors, "text_emb": pa.nulls(rows, vectors.type),
               "clip_score": rng.random(rows, dtype=np.float32)}
        pio.write_parquet_atomic(str(run_dir / "embed" / "parts" / f"{part:05d}.parquet"),
                                 pa.Table.from_pydict(emb, schema=EMBEDDINGS))
    done.write_text(json.dumps({"n": n, "dim": dim, "seed": seed}))


# ---------------------------------------------------------------- memory


def _status_kib(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def descendants(root: int) -> dict[int, str]:
    """pid -> command line of every process below `root`."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        for child, ppid in parent.items():
            if ppid == pid and child not in found:
                try:
                    found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                frontier.append(child)
    return found


class PeakSampler(threading.Thread):
    """Samples this process's tree: JVM VmHWM (last seen) and Python workers' summed / largest RSS."""

    def __init__(self, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.every, self.stopped = every, threading.Event()
        self.jvm_hwm = self.workers_sum = self.worker_max = 0

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            self.sample()

    def sample(self) -> None:
        total = 0
        for pid, cmd in descendants(os.getpid()).items():
            try:
                if "java" in cmd.split(" ", 1)[0]:
                    self.jvm_hwm = max(self.jvm_hwm, _status_kib(pid, "VmHWM") * 1024)
                elif "python" in cmd.split(" ", 1)[0]:
                    rss = _status_kib(pid, "VmRSS") * 1024
                    total += rss
                    self.worker_max = max(self.worker_max, rss)
            except OSError:
                continue
        self.workers_sum = max(self.workers_sum, total)

    def stop(self) -> dict[str, int]:
        self.sample()
        self.stopped.set()
        return {"driver": _status_kib("self", "VmHWM") * 1024, "jvm": self.jvm_hwm,
                "workers": self.workers_sum, "worker_max": self.worker_max}


# ---------------------------------------------------------------- children (one fresh Spark each)


def child_pipeline(args: argparse.Namespace) -> dict:
    from pipeline.core.config import config_from_dict
    from pipeline.core.runner import run_pipeline

    shards = make_shards(Path(args.workdir) / f"shards-{args.n}", args.n)
    run_dir = Path(args.workdir) / f"run-{args.n}"
    cfg = config_from_dict({"input": str(shards), "run_dir": str(run_dir), "seed": 0,
                            "spark": {"master": args.master, "log_level": "ERROR"},
                            "basic_filter": {"min_side": 16}, "export": {"samples_per_shard": 10_000}})
    sampler = PeakSampler()
    sampler.start()
    started = time.time()
    result = run_pipeline(cfg, force=True)
    wall = time.time() - started
    return {"seconds": {name: m["seconds"] for name, m in result.manifests.items()}, "wall": wall,
            "memory": sampler.stop(), "ledger": result.ledger}


def model_free_stages(names: list[str]) -> list:
    """basic_filter, exact_dedup, cluster (before the first step that needs it) and `names` after."""
    from pipeline.core.runner import STEPS
    from pipeline.stages.cluster import Cluster

    stages, clustered = [], False
    for name in ["basic_filter", "exact_dedup", *names]:
        stage = STEPS[name]()
        if "cluster" in stage.needs and not clustered:
            stages.append(Cluster())
            clustered = True
        stages.append(stage)
    return stages if clustered else [*stages, Cluster()]


def child_model_free(args: argparse.Namespace) -> dict:
    from pipeline.core.config import config_from_dict
    from pipeline.core.spark import get_spark
    from pipeline.core.stage import RunContext

    run_dir = Path(args.workdir) / f"synthetic-{args.n}-{args.dim}"
    make_synthetic_run(run_dir, args.n, args.dim)
    steps = [s for s in args.steps.split(",") if s]
    cfg = config_from_dict({"input": "/synthetic/*.tar", "run_dir": str(run_dir), "seed": 0, "steps": steps,
                            "spark": {"master": args.master, "log_level": "ERROR"},
                            "cluster": {"enabled": True, "n_clusters": args.k}})
    sampler = PeakSampler()
    sampler.start()
    ctx = RunContext(cfg=cfg, spark=get_spark(cfg.spark), fingerprints={"ingest": "synthetic", "embed": "synthetic"})
    started = time.time()
    seconds = {stage.name: stage.run(ctx, force=True)["seconds"] for stage in model_free_stages(steps)}
    return {"seconds": seconds, "wall": time.time() - started, "memory": sampler.stop()}


# ---------------------------------------------------------------- parent


def growth_exponent(ns: list[int], ts: list[float]) -> float:
    """Slope b of log t = a + b log N (least squares)."""
    return float(np.polyfit(np.log(ns), np.log(np.maximum(ts, 1e-3)), 1)[0])


def mib(b: int) -> str:
    return f"{b / 2**20:,.0f} MiB"


def run_child(kind: str, n: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--n", str(n), "--workdir", args.workdir, "--master", args.master,
           "--dim", str(args.dim), "--k", str(args.k), "--steps", args.steps]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{kind} N={n} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(title: str, results: dict[int, dict]) -> None:
    for r in results.values():
        r["total"] = sum(r["seconds"].values())
    for n, r in results.items():
        stages = "  ".join(f"{name} {s:.1f}s" for name, s in r["seconds"].items())
        m = r["memory"]
        print(f"{title} N={n:>9,}: {stages}  stages {r['total']:.1f}s ({n / r['total']:,.0f}/s), wall "
              f"{r['wall']:.1f}s  peak: driver "
              f"{mib(m['driver'])}, JVM {mib(m['jvm'])}, python workers {mib(m['workers'])} "
              f"(largest {mib(m['worker_max'])})", flush=True)
    if len(results) > 1:
        ns = list(results)
        names = list(next(iter(results.values()))["seconds"])
        slopes = {name: growth_exponent(ns, [results[n]["seconds"][name] for n in ns]) for name in names}
        slopes["total"] = growth_exponent(ns, [results[n]["total"] for n in ns])
        print(f"{title} growth exponent b (t ~ N^b): " + "  ".join(f"{k} {v:.2f}" for k, v in slopes.items()),
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1e4,3e4,1e5", help="samples for ingest -> export (comma-separated)")
    parser.add_argument("--emb-sizes", default="1e6,2e6,4e6", help="rows for the model-free stages ('' to skip)")
    parser.add_argument("--dim", type=int, default=128, help="embedding dimension of the synthetic rows")
    parser.add_argument("--k", type=int, default=1000, help="cluster.n_clusters")
    parser.add_argument("--steps", default="", help="more model-free steps after cluster, e.g. semdedup")
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--workdir", default="/tmp/bench_scale")
    parser.add_argument("--child", choices=["pipeline", "model_free"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = (child_pipeline if args.child == "pipeline" else child_model_free)(args)
        print(json.dumps(result))
        return
    sizes = [int(float(s)) for s in args.sizes.split(",") if s]
    emb_sizes = [int(float(s)) for s in args.emb_sizes.split(",") if s]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"scale bench: {os.cpu_count()} CPUs (load {load}), master {args.master}, workdir {args.workdir}",
          flush=True)
    report("ingest->export", {n: run_child("pipeline", n, args) for n in sizes})
    if emb_sizes:
        report(f"model-free d={args.dim} K={args.k}", {n: run_child("model_free", n, args) for n in emb_sizes})


if __name__ == "__main__":
    main()
