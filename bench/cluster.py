"""Cluster stage vs plain FAISS, side by side, on synthetic 512-d unit embeddings.

    python bench/cluster.py --sizes 1e5,1e6,4e6          # K = 1000, sample 256k (the defaults)
    python bench/cluster.py --sizes 2e4 --k 100 --sample-size 20000   # a quick smoke run

For each N the EMBEDDINGS table is generated shard by shard as Parquet (50k rows per file; kept
under --workdir for the next run), then two child processes run one after the other:
- stage: `Cluster().run` in a Spark session (local[*]); wall time of the stage only (the session is
  started before the clock, as earlier stages of a pipeline would have done it).
- plain: faiss.Kmeans(spherical) on a uniform random sample of the same size, then one process
  assigns every row (IndexFlatIP, file by file). `plain` = train + assign; drawing its sample (a
  full read in a loop of pyarrow) is printed but left out of the ratio, which is therefore strict.
Each child reports its own peak RSS (VmHWM in /proc/self/status); the stage child also reports
the peak of its Spark JVM (driver + local executors). Numbers are for this machine only.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, not bench/pipeline.py

import argparse
import glob
import hashlib
import json
import os
import subprocess
import tempfile
import time

import numpy as np

SHARD_ROWS = 50_000
N_CONCEPTS = 2_000  # the synthetic data's own cluster structure


def vm_hwm_bytes(pid: int | str = "self") -> int:
    """Peak resident set size of a process (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _proc_table() -> tuple[dict[int, list[int]], dict[int, int], dict[int, str]]:
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    names: dict[int, str] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        pid = int(stat.split("/")[2])
        names[pid] = text.split("(", 1)[1].rsplit(")", 1)[0]
        rest = text.rsplit(")", 1)[1].split()
        children.setdefault(int(rest[1]), []).append(pid)
        ticks[pid] = sum(int(v) for v in rest[11:15])  # utime stime cutime cstime
    return children, ticks, names


def tree_cpu_seconds(root: int) -> float:
    """CPU time (user + system, reaped children included) of a process and all its descendants:
    for the stage, the driver, its JVM and the Python workers."""
    children, ticks, _ = _proc_table()
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += ticks.get(pid, 0)
        stack += children.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")


def child_pids(name: str) -> list[int]:
    me = os.getpid()
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            comm = Path(stat).read_text().split("(", 1)[1].rsplit(")", 1)[0]
        except OSError:
            continue
        if int(fields[1]) == me and comm == name:
            found.append(int(stat.split("/")[2]))
    return found


# ---------------------------------------------------------------- data


def generate(data_dir: Path, n: int, dim: int, seed: int = 0) -> None:
    """EMBEDDINGS Parquet files of unit vectors around N_CONCEPTS centres, one shard in memory at a time."""
    import pyarrow as pa

    from pipeline.core import io
    from schemas import EMBEDDINGS

    done = data_dir / "_generated.json"
    if done.exists() and json.loads(done.read_text()) == {"n": n, "dim": dim, "seed": seed}:
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    for old in data_dir.glob("*.parquet"):
        old.unlink()
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((N_CONCEPTS, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for shard, start in enumerate(range(0, n, SHARD_ROWS)):
        rows = min(SHARD_ROWS, n - start)
        r = np.random.default_rng([seed, shard])
        noise = r.standard_normal((rows, dim), dtype=np.float32) * (0.8 / np.sqrt(dim))
        x = centres[r.integers(0, N_CONCEPTS, rows)] + noise
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        ids = range(start, start + rows)
        offsets = pa.array(np.arange(0, (rows + 1) * dim, dim, dtype=np.int32))
        table = pa.table(
            {
                "sample_id": [f"{shard:05d}/{i:09d}" for i in ids],
                "uid": [hashlib.sha256(i.to_bytes(8, "little")).hexdigest() for i in ids],
                "image_emb": pa.ListArray.from_arrays(offsets, pa.array(x.ravel())),
                "text_emb": pa.nulls(rows, pa.list_(pa.float32())),
                "clip_score": pa.nulls(rows, pa.float32()),
            },
            schema=EMBEDDINGS,
        )
        io.write_parquet_atomic(str(data_dir / f"{shard:05d}.parquet"), table)
    done.write_text(json.dumps({"n": n, "dim": dim, "seed": seed}))


# ---------------------------------------------------------------- children


def run_stage(args: argparse.Namespace) -> dict:
    from pipeline.core.config import config_from_dict
    from pipeline.core.spark import get_spark
    from pipeline.core.stage import RunContext
    from pipeline.stages.cluster import Cluster

    run_dir = Path(args.run_dir)
    (run_dir / "embed").mkdir(parents=True, exist_ok=True)
    parts = run_dir / "embed" / "parts"
    if not parts.exists():
        parts.symlink_to(Path(args.data).resolve())
    cfg = config_from_dict({
        "input": args.data, "run_dir": str(run_dir), "seed": 0,
        "spark": {"master": args.master, "log_level": "ERROR"},
        "cluster": {"enabled": True, "n_clusters": args.k, "sample_size": args.sample_size,
                    "iterations": args.iterations, "assign_from": args.assign_from},
    })
    ctx = RunContext(cfg=cfg, spark=get_spark(cfg.spark))
    load, cpu, started = load_average(), tree_cpu_seconds(os.getpid()), time.time()
    manifest = Cluster().run(ctx, force=True)
    wall = time.time() - started
    cpu = tree_cpu_seconds(os.getpid()) - cpu
    jvm = child_pids("java")
    return {"wall": wall, "cpu": cpu, "load": (load, load_average()), "counts": manifest["counts"],
            "rss": vm_hwm_bytes(), "jvm_rss": max((vm_hwm_bytes(p) for p in jvm), default=0)}


def run_plain(args: argparse.Namespace) -> dict:
    import faiss
    import pyarrow.parquet as pq

    from pipeline.cluster.kmeans import vectors_from_arrow

    files = sorted(glob.glob(f"{args.data}/*.parquet"))
    sizes = [pq.ParquetFile(f).metadata.num_rows for f in files]
    n = sum(sizes)
    target = min(args.sample_size, n, args.k * 256)
    started = time.time()
    chosen = np.sort(np.random.default_rng(0).choice(n, target, replace=False))
    pieces, first = [], 0
    for f, size in zip(files, sizes):
        local = chosen[(chosen >= first) & (chosen < first + size)] - first
        if len(local):
            pieces.append(vectors_from_arrow(pq.read_table(f, columns=["image_emb"]).column("image_emb"))[local])
        first += size
    sample = np.ascontiguousarray(np.concatenate(pieces))
    del pieces
    sample_s = time.time() - started

    load, cpu, started = load_average(), sum(os.times()[:2]), time.time()
    km = faiss.Kmeans(sample.shape[1], args.k, niter=args.iterations, nredo=1, spherical=True, seed=0,
                      max_points_per_centroid=256, verbose=False)
    km.train(sample)
    train_s = time.time() - started
    del sample

    started = time.time()
    index = faiss.IndexFlatIP(km.centroids.shape[1])
    index.add(km.centroids)
    ids, dists = [], []
    for f in files:
        x = vectors_from_arrow(pq.read_table(f, columns=["image_emb"]).column("image_emb"))
        for a in range(0, len(x), 65_536):
            sim, label = index.search(x[a : a + 65_536], 1)
            ids.append(label[:, 0].astype(np.int32))
            dists.append(1 - sim[:, 0])
    assigned = sum(len(i) for i in ids)
    assign_s = time.time() - started
    return {"wall": train_s + assign_s, "cpu": sum(os.times()[:2]) - cpu, "load": (load, load_average()),
            "train": train_s, "assign": assign_s, "sample": sample_s, "assigned": assigned, "rss": vm_hwm_bytes()}


# ---------------------------------------------------------------- driver


def child(kind: str, args: argparse.Namespace, data: Path, run_dir: Path, assign_from: str = "dataframe") -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--data", str(data), "--run-dir", str(run_dir),
           "--k", str(args.k), "--sample-size", str(args.sample_size), "--iterations", str(args.iterations),
           "--master", args.master, "--assign-from", assign_from]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def gib(b: int) -> str:
    return f"{b / 2**30:.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1e5,1e6,4e6", help="comma-separated N values")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--sample-size", type=int, default=256_000)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--repeat", type=int, default=1, help="stage/plain pairs per N (alternating)")
    parser.add_argument("--assign-from", default="dataframe",
                        help="cluster.assign_from values to run, comma-separated (dataframe, files)")
    parser.add_argument("--workdir", default=f"{tempfile.gettempdir()}/bench_cluster")
    parser.add_argument("--child", choices=["stage", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = run_stage(args) if args.child == "stage" else run_plain(args)
        print(json.dumps(result), flush=True)
        return

    work = Path(args.workdir)
    print(f"cluster bench: K={args.k} d={args.dim} sample_size={args.sample_size} iterations={args.iterations} "
          f"master={args.master} cpus={os.cpu_count()}", flush=True)
    for size in args.sizes.split(","):
        n = int(float(size))
        data = work / f"data_{n}_{args.dim}"
        started = time.time()
        generate(data, n, args.dim)
        gen_s = time.time() - started
        for _ in range(args.repeat):
            stages = {v: child("stage", args, data, work / f"run_{n}", v) for v in args.assign_from.split(",")}
            plain = child("plain", args, data, work / f"run_{n}")
            for variant, stage in stages.items():
                c = stage["counts"]
                assert c["assigned"] == plain["assigned"] == n
                secs = c["seconds"]
                print(
                    f"N={n:>9,} | stage[{variant}] {stage['wall']:6.1f}s (sample {secs['sample']:.1f}, train "
                    f"{secs['train']:.1f} incl. k-means++ {secs['init']:.1f}, assign {secs['assign']:.1f}) | plain "
                    f"{plain['wall']:6.1f}s (train {plain['train']:.1f}, assign {plain['assign']:.1f}; "
                    f"its sample read {plain['sample']:.1f}) | stage/plain wall {stage['wall'] / plain['wall']:.2f}, "
                    f"cpu {stage['cpu'] / plain['cpu']:.2f} ({stage['cpu']:.0f}/{plain['cpu']:.0f} cpu-s) | peak RSS: "
                    f"stage driver {gib(stage['rss'])}, plain {gib(plain['rss'])}, Spark JVM {gib(stage['jvm_rss'])} "
                    f"| load avg {stage['load'][0]:.1f}-{stage['load'][1]:.1f} / "
                    f"{plain['load'][0]:.1f}-{plain['load'][1]:.1f} | data gen {gen_s:.0f}s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
