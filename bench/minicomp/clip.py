"""A small open_clip architecture, trained with open_clip's own training code, and its zero-shot eval."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
import webdataset as wds
from open_clip.constants import HF_CONFIG_NAME, HF_WEIGHTS_NAME

from bench.minicomp.world import class_prompts, task_classes, task_labels
from pipeline.models.tiny import TINY_PREPROCESS_CFG, register_model_config

ARCH = "minicomp-clip"
# ~7.6M parameters (6.3M in the token embedding); 32 px images in 16 patches of 8 px. About 350
# training samples/s on 2 CPU cores (decoding the shards included), so that the whole benchmark
# fits its time budget.
MODEL_CFG: dict = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 128, "layers": 3, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 3},
}


def register_arch() -> str:
    """Register `minicomp-clip` with open_clip in this process (idempotent); return its name."""
    return register_model_config(ARCH, MODEL_CFG)


def train(train_pattern: str, *, samples_per_epoch: int, epochs: int, logs: Path, name: str, seed: int,
          batch_size: int = 128, lr: float = 2e-3, workers: int = 0) -> Path:
    """Train from scratch with `open_clip_train.main.main` on webdataset shards; return the last checkpoint.

    Shards are sampled with replacement (`--dataset-resampled`) so every run sees exactly
    `samples_per_epoch * epochs` samples, whatever the size of its training set.
    """
    from open_clip_train.main import main

    register_arch()
    argv = [
        "--train-data", train_pattern, "--dataset-type", "webdataset", "--dataset-resampled",
        "--train-num-samples", str(samples_per_epoch), "--model", ARCH, "--batch-size", str(batch_size),
        "--epochs", str(epochs), "--lr", str(lr), "--wd", "0.1", "--warmup", "20", "--workers", str(workers),
        "--save-frequency", str(epochs), "--logs", str(logs), "--name", name, "--seed", str(seed),
        "--precision", "fp32", "--device", "cpu", "--log-every-n-steps", "1000", "--report-to", "",
    ]
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        if main(argv) == -1:
            raise RuntimeError(f"open_clip_train refused run {name} (log dir {logs / name} exists?)")
    finally:  # open_clip_train reconfigures the root logger
        root.handlers[:], root.level = handlers, level
    return logs / name / "checkpoints" / f"epoch_{epochs}.pt"


def state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The model weights of an open_clip_train checkpoint, without DDP prefixes."""
    data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return {k.removeprefix("module."): v for k, v in data["state_dict"].items()}


def export_local_dir(checkpoint: Path, out_dir: Path) -> str:
    """Write the weights + open_clip_config.json as an open_clip `local-dir:` model; return its arch id.

    The config travels with the weights, so Spark workers load it without registering anything.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict(checkpoint), out_dir / HF_WEIGHTS_NAME)
    config = {"model_cfg": MODEL_CFG, "preprocess_cfg": TINY_PREPROCESS_CFG}
    (out_dir / HF_CONFIG_NAME).write_text(json.dumps(config, indent=2))
    return f"local-dir:{out_dir.resolve()}"


@dataclass(frozen=True)
class HeldOut:
    """The held-out set, preprocessed once: images, their captions and per-task class labels."""

    images: torch.Tensor  # (N, 3, S, S), the eval transform of `ARCH`
    captions: list[str]
    labels: dict[str, torch.Tensor]  # task -> (N,) class index; "concept" included

    @classmethod
    def load(cls, world: dict) -> "HeldOut":
        """Read `world`'s held-out shard through webdataset, as a user's eval loader would."""
        register_arch()
        _, _, preprocess = open_clip.create_model_and_transforms(ARCH)
        dataset = wds.WebDataset(world["heldout_tar"], shardshuffle=False).decode("pil").to_tuple(
            "jpg;png;webp", "txt")
        images, captions = [], []
        for image, text in dataset:
            images.append(preprocess(image.convert("RGB")))
            captions.append(text)
        if len(images) != len(world["heldout_concepts"]):
            raise RuntimeError(f"held-out shard has {len(images)} samples, ground truth {len(world['heldout_concepts'])}")
        labels = {t: torch.from_numpy(v) for t, v in task_labels(world["heldout_concepts"]).items()}
        return cls(torch.stack(images), captions, labels)


def load_trained(checkpoint: Path) -> torch.nn.Module:
    """An open_clip_train checkpoint of `ARCH` as an eval-mode model."""
    register_arch()
    model = open_clip.create_model(ARCH)
    model.load_state_dict(state_dict(checkpoint))
    return model.eval()


@torch.inference_mode()
def evaluate(checkpoint: Path, heldout: HeldOut) -> dict[str, float]:
    """Zero-shot top-1 on every task of `task_classes` (class = mean prompt embedding), text-to-image
    retrieval R@1 with the held-out captions (a hit: the top image shows the caption's concept),
    and `average`, their mean (as DataComp averages its tasks)."""
    model = load_trained(checkpoint)
    tokenizer = open_clip.get_tokenizer(ARCH)

    def encode_texts(texts: list[str]) -> torch.Tensor:
        return F.normalize(torch.cat([model.encode_text(tokenizer(texts[i:i + 512]))
                                      for i in range(0, len(texts), 512)]), dim=-1)

    image = F.normalize(torch.cat([model.encode_image(heldout.images[i:i + 512])
                                   for i in range(0, len(heldout.images), 512)]), dim=-1)
    scores = {}
    for task, names in task_classes().items():
        classes = torch.stack([F.normalize(encode_texts(class_prompts(task, n)).mean(0), dim=0) for n in names])
        scores[task] = float(((image @ classes.T).argmax(1) == heldout.labels[task]).float().mean())
    top_image = (encode_texts(heldout.captions) @ image.T).argmax(1)
    concept = heldout.labels["concept"]
    scores["retrieval_t2i_r1"] = float((concept[top_image] == concept).float().mean())
    scores["average"] = sum(scores.values()) / len(scores)
    return scores
