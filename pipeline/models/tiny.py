"""`curate-tiny`: a deliberately small open_clip architecture for tests and demos.

The weights are random but deterministic (seeded), so a checkpoint made here is a
stable fixture: the same seed always yields a byte-identical file.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import open_clip
import torch
from huggingface_hub.file_download import repo_folder_name
from open_clip.constants import HF_CONFIG_NAME, HF_WEIGHTS_NAME
from open_clip.transform import PreprocessCfg

TINY_ARCH = "curate-tiny"

# ViT-style towers; one forward pass of 64 image/caption pairs takes a few ms on CPU.
TINY_MODEL_CFG: dict = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}

# What curate-tiny is "trained" with: open_clip's defaults, which is also what a bare
# curate-tiny checkpoint file resolves to (the arch has no published pretrained tags).
_DEFAULTS = PreprocessCfg()
TINY_PREPROCESS_CFG: dict = {
    "mean": list(_DEFAULTS.mean),
    "std": list(_DEFAULTS.std),
    "interpolation": _DEFAULTS.interpolation,
    "resize_mode": _DEFAULTS.resize_mode,
}

# Fixed commit hash for the fake Hugging Face cache snapshot.
TINY_HF_REVISION = "0123456789abcdef0123456789abcdef01234567"


def register_model_config(name: str, model_cfg: dict) -> str:
    """Register an open_clip model config under `name` in this process (idempotent); return the name."""
    if name not in open_clip.list_models():
        # add_model_config only accepts paths; the registry keeps the parsed config after the
        # temporary file is gone.
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.json"
            path.write_text(json.dumps(model_cfg))
            open_clip.add_model_config(path)
    return name


def register_tiny() -> str:
    """Register `curate-tiny` with open_clip's model-config registry (idempotent); return its name."""
    return register_model_config(TINY_ARCH, TINY_MODEL_CFG)


def make_tiny_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """Write a plain curate-tiny state_dict with seeded weights to `path`; return the path.

    The same seed yields a byte-identical file regardless of the file name. The global
    torch RNG state of the caller is left untouched.
    """
    register_tiny()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(TINY_ARCH, pretrained_text=False)
    # Serialise through a buffer: torch.save names the zip records after the file otherwise.
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def make_tiny_hf_cache(cache_dir: str | Path, repo_id: str = "curate/curate-tiny", seed: int = 0) -> str:
    """Lay out a curate-tiny checkpoint as a Hugging Face hub cache under `cache_dir`.

    Produces `models--<org>--<name>/refs/main` and `snapshots/<revision>/` holding
    `open_clip_config.json` (model_cfg + preprocess_cfg) and `open_clip_pytorch_model.bin`,
    which is what open_clip's `hf-hub:` loader resolves offline. Returns the arch string
    (`"hf-hub:<repo_id>"`) to put in a ModelSpec together with `cache_dir`.
    """
    repo_dir = Path(cache_dir) / repo_folder_name(repo_id=repo_id, repo_type="model")
    snapshot = repo_dir / "snapshots" / TINY_HF_REVISION
    make_tiny_checkpoint(snapshot / HF_WEIGHTS_NAME, seed=seed)
    config = {"model_cfg": TINY_MODEL_CFG, "preprocess_cfg": TINY_PREPROCESS_CFG}
    (snapshot / HF_CONFIG_NAME).write_text(json.dumps(config, indent=2))
    (repo_dir / "refs").mkdir(exist_ok=True)
    # huggingface_hub reads the ref verbatim: no trailing newline.
    (repo_dir / "refs" / "main").write_text(TINY_HF_REVISION)
    return f"hf-hub:{repo_id}"
