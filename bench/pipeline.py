"""`curate run` as users get it, stage by stage, beside bare loops doing the same work, in one run.

    python bench/pipeline.py                 # 10,000 samples in 10 shards; embed: 1,050 in 3 shards
    python bench/pipeline.py --samples 2000 --embed-samples 150 --embed-shards 3     # a quick look

The pool is img2dataset-like: 256-px JPEGs at quality 95 (smooth random scenes with texture, every
image distinct), captions of 3 to 8 words, `--per-shard` samples per tar (+ .parquet, _stats.json).

Part 1: `curate run` with the default config (`input` and `run_dir` only, plus Spark's event log to
count its jobs) in a fresh process; ingest and export samples/s from the stage manifests (each
stage's own wall time). Bare loops over the same files, in a pool of as many processes as the
machine has cores (what `local[*]` gives Spark):
  ingest (a) tar scan + sha256 + full decode + 32x32 LANCZOS pHash (the pHash before draft decoding)
         (b) tar scan + sha256 + JPEG draft decode at 1/4 scale + 32x32 pHash
  export a plain resharder: the run's own output shards, each image read at its offset, its sha256
         checked, tar + parquet written (one process per output shard)
Part 2: `curate run` with the defaults and embed enabled (ViT-B-32, random weights; no download)
over --embed-samples in --embed-shards tars (not a multiple of the cores), against the bare
open_clip forward: encode_image + encode_text on pre-decoded tensors in one process, torch
threads = cores, batches of 32 (the embed stage's CPU batch). The run's rate is embedded samples
over the wall time of the whole `curate run` process (Spark start, every stage, ledger, report).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections import Counter
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = ("red blue green small large old new cat dog house tree car boat sky river hill city road "
         "field flower bird horse beach snow night light").split()
SIZE = 256


# ---------------------------------------------------------------- pool


def _image(seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((SIZE, SIZE), Image.BICUBIC)
    pixels = np.asarray(coarse, dtype=np.float32) + rng.normal(0, 5, (SIZE, SIZE, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=95)
    return out.getvalue()


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 1_700_000_000
    tar.addfile(info, io.BytesIO(data))


def _write_shard(job: tuple[Path, int, int, int]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out, shard, first, count = job
    rng = np.random.default_rng([7, shard])
    rows = []
    with tarfile.open(out / f"{shard:05d}.tar", "w") as tar:
        for i in range(count):
            key = f"{shard:05d}{i:04d}"
            caption = " ".join(rng.choice(WORDS, int(rng.integers(3, 9))))
            meta = {"url": f"https://images.example/{key}.jpg", "key": key, "status": "success",
                    "error_message": None, "caption": caption, "width": SIZE, "height": SIZE}
            _member(tar, f"{key}.jpg", _image(first + i))
            _member(tar, f"{key}.txt", caption.encode())
            _member(tar, f"{key}.json", json.dumps(meta).encode())
            rows.append(meta)
    pq.write_table(pa.Table.from_pylist(rows), out / f"{shard:05d}.parquet")
    (out / f"{shard:05d}_stats.json").write_text(json.dumps({"count": count, "successes": count, "failed_to_download": 0}))


def make_pool(out: Path, n: int, per_shard: int, seed: int) -> Path:
    """img2dataset-like shards of n samples; reused when already made with the same arguments."""
    done = out / "_made.json"
    spec = {"n": n, "per_shard": per_shard, "seed": seed}
    if done.exists() and json.loads(done.read_text()) == spec:
        return out
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(out, s, seed * 10**7 + s * per_shard, min(per_shard, n - s * per_shard))
            for s in range(-(-n // per_shard))]
    with Pool(os.cpu_count()) as pool:
        pool.map(_write_shard, jobs)
    done.write_text(json.dumps(spec))
    return out


# ---------------------------------------------------------------- the product


def curate_run(config: dict, work: Path) -> tuple[float, dict, Counter]:
    """(wall seconds, stage manifests, Spark jobs by description) of `curate run` in a fresh process."""
    import yaml

    events = work / "events"
    for old in (events, Path(config["run_dir"])):
        shutil.rmtree(old, ignore_errors=True)
    events.mkdir(parents=True)
    config = {**config, "spark": {"conf": {"spark.eventLog.enabled": "true", "spark.eventLog.dir": str(events),
                                     "spark.eventLog.compress": "false"}}}
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(path)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    run_dir = Path(config["run_dir"])
    manifests = {p.parent.name: json.loads(p.read_text()) for p in run_dir.glob("*/_manifest.json")}
    jobs: Counter = Counter()
    for log in (p for p in events.rglob("*") if p.is_file()):
        for line in log.read_text().splitlines():
            if '"SparkListenerJobStart"' in line:
                description = json.loads(line).get("Properties", {}).get("spark.job.description") or "(none)"
                jobs[description.split(":")[0].split(" ")[0]] += 1
    return wall, manifests, jobs


# ---------------------------------------------------------------- bare loops


def _dct_hash(grey: np.ndarray) -> int:
    from pipeline.imaging import _dct_matrix

    d = _dct_matrix()
    low = (d @ grey.astype(np.float64) @ d.T)[:8, :8].ravel()
    return int(np.packbits(low > np.median(low)).view(">u8")[0])


def _bare_ingest(job: tuple[str, bool]) -> int:
    """Samples of one tar: scan, sha256, decode (full or draft) and pHash."""
    from PIL import Image

    path, draft = job
    n = 0
    with tarfile.open(path, "r|") as tar:
        for info in tar:
            data = tar.extractfile(info).read()
            if not info.name.endswith(".jpg"):
                continue
            hashlib.sha256(data).hexdigest()
            image = Image.open(io.BytesIO(data))
            if draft:
                image.draft("L", (image.width // 4, image.height // 4))
                grey = image.convert("L").resize((32, 32), Image.Resampling.BILINEAR)
            else:
                image.load()
                grey = image.convert("L").resize((32, 32), Image.Resampling.LANCZOS)
            _dct_hash(np.asarray(grey))
            n += 1
    return n


def bare_ingest(shards: list[str], draft: bool) -> float:
    started = time.perf_counter()
    with Pool(os.cpu_count()) as pool:
        n = sum(pool.map(_bare_ingest, [(s, draft) for s in shards], chunksize=1))
    return n / (time.perf_counter() - started)


def _bare_reshard(job: tuple[str, list[dict]]) -> int:
    """One output shard: each image read at its offset and checked, then tar + parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out, rows = job
    handles: dict = {}
    with tarfile.open(out + ".tar", "w|", format=tarfile.GNU_FORMAT) as tar:
        for row in rows:
            f = handles.get(row["shard"]) or handles.setdefault(row["shard"], open(row["shard"], "rb"))
            f.seek(row["image_offset"])
            data = f.read(row["image_bytes"])
            assert hashlib.sha256(data).hexdigest() == row["uid"]
            record = {k: row[k] for k in ("key", "uid", "sample_id", "caption", "url", "width", "height", "image_ext")}
            _member(tar, f"{row['key']}.{row['image_ext']}", data)
            _member(tar, f"{row['key']}.txt", (row["caption"] or "").encode())
            _member(tar, f"{row['key']}.json", json.dumps(record, sort_keys=True).encode())
    for f in handles.values():
        f.close()
    pq.write_table(pa.Table.from_pylist([{k: r[k] for k in ("key", "uid", "sample_id", "caption", "url")} for r in rows]),
                   out + ".parquet", compression="zstd")
    return len(rows)


def bare_export(run_dir: Path, out: Path) -> float:
    """A plain resharder writing the run's own output shards (same samples, same order)."""
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    samples = {r["sample_id"]: r for r in pq.read_table(run_dir / "ingest" / "parts").to_pylist()}
    jobs = []
    for part in sorted((run_dir / "export").glob("*.parquet")):
        kept = pq.read_table(part, columns=["key", "sample_id"]).to_pylist()
        jobs.append((str(out / part.stem), [{**samples[r["sample_id"]], "key": r["key"]} for r in kept]))
    started = time.perf_counter()
    with Pool(min(os.cpu_count() or 1, len(jobs))) as pool:
        n = sum(pool.map(_bare_reshard, jobs, chunksize=1))
    return n / (time.perf_counter() - started)


def bare_forward(run_dir: Path, arch: str, batch: int) -> float:
    """Images/s of encode_image + encode_text on pre-decoded tensors, torch threads = cores."""
    import pyarrow.parquet as pq
    import torch
    from PIL import Image

    from pipeline.models import ModelSpec, load_clip, set_torch_threads

    embedded = set(pq.read_table(run_dir / "embed" / "parts", columns=["sample_id"]).column(0).to_pylist())
    samples = [r for r in pq.read_table(run_dir / "ingest" / "parts").to_pylist() if r["sample_id"] in embedded]
    clip = load_clip(ModelSpec(arch=arch, allow_random=True), "cpu")
    set_torch_threads(os.cpu_count() or 1)
    images = []
    for s in samples:
        with open(s["shard"], "rb") as f:
            f.seek(s["image_offset"])
            images.append(clip.preprocess(Image.open(io.BytesIO(f.read(s["image_bytes"]))).convert("RGB")))
    tokens = clip.tokenizer([s["caption"] or "" for s in samples])
    with torch.inference_mode():
        clip.model.encode_image(torch.stack(images[:2]))  # warm-up
        started = time.perf_counter()
        for i in range(0, len(images), batch):
            torch.nn.functional.normalize(clip.model.encode_image(torch.stack(images[i : i + batch])), dim=-1)
            torch.nn.functional.normalize(clip.model.encode_text(tokens[i : i + batch]), dim=-1)
    return len(images) / (time.perf_counter() - started)


# ---------------------------------------------------------------- main


def line(label: str, product: float, bare: float, bare_label: str) -> str:
    return f"| {label} | {product:,.1f}/s | {bare_label}: {bare:,.1f}/s | {product / bare:.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10_000, help="0 skips part 1")
    parser.add_argument("--per-shard", type=int, default=1_000)
    parser.add_argument("--embed-samples", type=int, default=1_050, help="0 skips part 2")
    parser.add_argument("--embed-shards", type=int, default=3)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--workdir", default="build/bench-pipeline")
    args = parser.parse_args()
    work = Path(args.workdir).resolve()
    load = os.getloadavg()
    print(f"{os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at start")
    print("| stage | curate run (defaults) | bare work, same data, same cores | ratio |")
    print("|---|---|---|---|")

    if args.samples:
        part_one(args, work)
    if args.embed_samples:
        part_two(args, work)
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the end")


def part_one(args: argparse.Namespace, work: Path) -> None:
    """Ingest and export of `curate run` with the defaults, beside the bare loops."""
    pool = make_pool(work / "pool", args.samples, args.per_shard, seed=1)
    run_dir = work / "run"
    wall, manifests, jobs = curate_run({"input": str(pool), "run_dir": str(run_dir)}, work / "run-1")
    ingest = manifests["ingest"]["counts"]["input"] / manifests["ingest"]["seconds"]
    export = manifests["export"]["counts"]["kept"] / manifests["export"]["seconds"]
    shards = sorted(str(p) for p in pool.glob("*.tar"))
    print(line(f"ingest ({args.samples:,} samples, {len(shards)} shards)", ingest, bare_ingest(shards, False),
               "tar scan + sha256 + full decode + LANCZOS pHash"))
    print(line("", ingest, bare_ingest(shards, True), "tar scan + sha256 + draft decode 1/4 + pHash"))
    print(line(f"export ({manifests['export']['counts']['kept']:,} kept, "
               f"{len(manifests['export']['counts']['shards'])} shards)", export, bare_export(run_dir, work / "bare-export"),
               "plain resharder"))
    print(f"\nrun 1: {wall:.1f} s wall, {sum(jobs.values())} Spark jobs: {dict(sorted(jobs.items()))}")


def part_two(args: argparse.Namespace, work: Path) -> None:
    """Embed and the whole `curate run` with embed enabled, beside the bare forward."""
    per = -(-args.embed_samples // args.embed_shards)
    pool = make_pool(work / "embed-pool", args.embed_samples, per, seed=2)
    run_dir = work / "embed-run"
    config = {"input": str(pool), "run_dir": str(run_dir),
              "embed": {"enabled": True, "model": {"arch": args.arch, "allow_random": True}}}
    wall, manifests, jobs = curate_run(config, work / "run-2")
    embedded = manifests["embed"]["counts"]["embedded"]
    bare = bare_forward(run_dir, args.arch, 32)
    label = f"embed ({args.arch} random init, {embedded:,} samples, {args.embed_shards} shards)"
    print(line(label, embedded / manifests["embed"]["seconds"], bare, "open_clip forward, pre-decoded"))
    print(line("whole `curate run` (Spark start to report)", embedded / wall, bare, "open_clip forward, pre-decoded"))
    print(f"\nrun 2: {wall:.1f} s wall, stages {({k: v['seconds'] for k, v in manifests.items()})}, "
          f"{sum(jobs.values())} Spark jobs: {dict(sorted(jobs.items()))}")


if __name__ == "__main__":
    main()
