"""A small open_clip architecture, trained with open_clip's own training code, and its zero-shot eval."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.constants import HF_CONFIG_NAME, HF_WEIGHTS_NAME
from PIL import Image

from pipeline.models.tiny import TINY_PREPROCESS_CFG

ARCH = "minicomp-clip"
# ~3.4M parameters, most in the token embedding; 32 px images in 16 patches. Kept this small so
# that a training run fits the benchmark's time budget on 2 (shared) CPU cores.
MODEL_CFG: dict = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


def register_arch() -> str:
    """Register `minicomp-clip` with open_clip in this process (idempotent); return its name."""
    if ARCH not in open_clip.list_models():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{ARCH}.json"
            path.write_text(json.dumps(MODEL_CFG))
            open_clip.add_model_config(path)
    return ARCH


def train(train_pattern: str, *, samples_per_epoch: int, epochs: int, logs: Path, name: str, seed: int,
          batch_size: int = 128, lr: float = 2e-3) -> Path:
    """Train from scratch with `open_clip_train.main.main` on webdataset shards; return the last checkpoint.

    Shards are sampled with replacement (`--dataset-resampled`) so every run sees exactly
    `samples_per_epoch * epochs` samples, whatever the size of its training set.
    """
    from open_clip_train.main import main

    register_arch()
    argv = [
        "--train-data", train_pattern, "--dataset-type", "webdataset", "--dataset-resampled",
        "--train-num-samples", str(samples_per_epoch), "--model", ARCH, "--batch-size", str(batch_size),
        "--epochs", str(epochs), "--lr", str(lr), "--wd", "0.1", "--warmup", "20", "--workers", "0",
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


@torch.inference_mode()
def zero_shot_top1(checkpoint: Path, heldout: str, prompts: list[list[str]]) -> float:
    """Top-1 accuracy of zero-shot classification of the held-out images (class = mean prompt embedding)."""
    register_arch()
    model, _, preprocess = open_clip.create_model_and_transforms(ARCH)
    model.load_state_dict(state_dict(checkpoint))
    model.eval()
    tokenizer = open_clip.get_tokenizer(ARCH)
    classes = []
    for texts in prompts:
        emb = torch.nn.functional.normalize(model.encode_text(tokenizer(texts)), dim=-1).mean(0)
        classes.append(torch.nn.functional.normalize(emb, dim=0))
    text = torch.stack(classes)
    data = np.load(heldout, allow_pickle=False)
    images, labels = data["images"], torch.from_numpy(data["labels"])
    correct = 0
    for start in range(0, len(images), 256):
        batch = torch.stack([preprocess(Image.fromarray(a)) for a in images[start:start + 256]])
        emb = torch.nn.functional.normalize(model.encode_image(batch), dim=-1)
        correct += int(((emb @ text.T).argmax(1) == labels[start:start + 256]).sum())
    return correct / len(images)
