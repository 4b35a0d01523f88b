"""Embed stage throughput against the bare open_clip forward pass, side by side in one run.

(a) bare forward: the same images, already decoded and preprocessed into tensors, through
    encode_image + encode_text in batches of the same size with the same torch threads;
(b) the embed stage end to end: tar bytes -> decode -> preprocess -> forward -> Parquet, in Spark:
    default: the default configuration in a fresh session (local[*], one core and one torch thread
             per task, the model loaded inside the stage);
    tuned:   one task at a time holding all the cores (`spark.task.cpus` = threads), the model
             already loaded in the Python worker by a warm-up run.
Prints the rates and b/a for each. With a GPU it also reports ViT-B-32 fp16 images/s.
`bench/pipeline.py` measures the whole `curate run` on 256-px img2dataset-like shards.

    python bench/embed.py --arch ViT-B-32 --samples 480 --batch-size 64
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, not bench/pipeline.py

import argparse
import io
import os
import tempfile
import time

import pyarrow.parquet as pq
import torch
from PIL import Image

from pipeline.core.config import SparkConfig, config_from_dict
from pipeline.core.runner import run_pipeline
from pipeline.core.spark import get_spark
from pipeline.demo.generate import make_demo_data
from pipeline.models import ModelSpec, load_clip, set_torch_threads


def bare_forward_rate(spec: ModelSpec, samples: list[dict], batch_size: int, threads: int, device: str) -> float:
    """Images/s of encode_image + encode_text on pre-decoded, preprocessed tensors."""
    clip = load_clip(spec, device)
    set_torch_threads(threads)
    images, captions = [], []
    for s in samples:
        with open(s["shard"], "rb") as f:
            f.seek(s["image_offset"])
            images.append(clip.preprocess(Image.open(io.BytesIO(f.read(s["image_bytes"]))).convert("RGB")))
        captions.append(s["caption"] or "")
    batches = [
        (torch.stack(images[i : i + batch_size]).to(device), clip.tokenizer(captions[i : i + batch_size]).to(device))
        for i in range(0, len(images), batch_size)
    ]
    autocast = torch.autocast("cuda", dtype=torch.float16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), autocast:
        clip.model.encode_image(batches[0][0])  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        for img, txt in batches:
            torch.nn.functional.normalize(clip.model.encode_image(img), dim=-1).float().cpu()
            torch.nn.functional.normalize(clip.model.encode_text(txt), dim=-1).float().cpu()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--samples", type=int, default=480)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    make_demo_data(work / "data", n_samples=args.samples, samples_per_shard=max(args.samples // 4, 1), seed=0)
    spec = {"arch": args.arch, "allow_random": True}

    def config(run: str, shards: str, tuned: bool) -> dict:
        tuning = {"batch_size": args.batch_size, "threads": args.threads} if tuned else {}
        return {"input": str(work / "data" / "shards" / shards), "run_dir": str(work / run),
                "basic_filter": {"min_side": 32}, "embed": {"enabled": True, "model": spec, **tuning}}

    def stage_rate(result) -> float:
        return result.manifests["embed"]["counts"]["embedded"] / result.manifests["embed"]["seconds"]

    spark = get_spark(SparkConfig(log_level="ERROR"))
    default_rate = stage_rate(run_pipeline(config_from_dict(config("default", "*.tar", tuned=False))))
    spark.stop()
    spark = get_spark(SparkConfig(master=f"local[{args.threads}]", log_level="ERROR",
                                  conf={"spark.task.cpus": str(args.threads)}))
    run_pipeline(config_from_dict(config("warmup", "00000.tar", tuned=True)))  # loads the model in the Python worker
    result = run_pipeline(config_from_dict(config("timed", "*.tar", tuned=True)))
    tuned_rate = stage_rate(result)

    embedded = {r["sample_id"] for r in pq.read_table(work / "timed" / "embed" / "parts", columns=["sample_id"]).to_pylist()}
    samples = [r for r in pq.read_table(work / "timed" / "ingest" / "parts").to_pylist() if r["sample_id"] in embedded]
    bare_rate = bare_forward_rate(ModelSpec(**spec), samples, args.batch_size, args.threads, "cpu")
    spark.stop()

    print(f"model {args.arch} (random weights), {len(samples)} images, batch {args.batch_size}, {args.threads} threads, CPU")
    print(f"(a) bare forward (pre-decoded tensors): {bare_rate:8.2f} images/s")
    print(f"(b) embed stage, default config:      {default_rate:8.2f} images/s   ratio b/a: {default_rate / bare_rate:.3f}")
    print(f"(b) embed stage, tuned (1 task, warm): {tuned_rate:8.2f} images/s   ratio b/a: {tuned_rate / bare_rate:.3f}")
    if torch.cuda.is_available():
        gpu_rate = bare_forward_rate(ModelSpec(**spec), samples, 256, args.threads, "cuda:0")
        print(f"GPU {torch.cuda.get_device_name(0)}: {args.arch} fp16 bare forward {gpu_rate:.1f} images/s")


if __name__ == "__main__":
    main()
