"""Load open_clip models, tokenizers and inference preprocessing for the embedding stage.

Three weight sources are supported:

* a pretrained tag (``ModelSpec("ViT-B-32", "laion2b_s34b_b79k", cache_dir=...)``) and
  schema ids (``"hf-hub:org/repo"``, ``"local-dir:/path"``) go through open_clip's own
  factory, which loads pickles with ``weights_only=True`` (or safetensors) and takes the
  preprocessing the weights were trained with from the tag / ``open_clip_config.json``;
* a local checkpoint file is read here with ``weights_only=True`` and loaded strictly;
* random init, only when ``allow_random=True``.

``get_clip`` caches loaded models per process, so a Spark Python worker loads once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import open_clip
import PIL.Image
import torch
from open_clip.model import resize_pos_embed
from open_clip.transform import PreprocessCfg, image_transform_v2

from pipeline.core.model_spec import PREPROCESS_KEYS, ModelSpec

log = logging.getLogger(__name__)



class CheckpointError(RuntimeError):
    """A local checkpoint file is missing, unreadable, or does not fit the architecture."""


@dataclass
class LoadedClip:
    """A model ready for inference with the tokenizer and preprocessing that match it."""

    model: torch.nn.Module  # eval mode, on `device`, fp32 weights
    preprocess: Callable[[PIL.Image.Image], torch.Tensor]
    tokenizer: Callable[[list[str]], torch.Tensor]
    device: torch.device
    embed_dim: int
    preprocess_cfg: dict  # resolved size/mode/mean/std/interpolation/resize_mode/fill_color
    precision: str  # resolved: "fp32", or the "fp16"/"bf16" autocast dtype used on CUDA


def load_clip(spec: ModelSpec, device: str | torch.device = "cpu") -> LoadedClip:
    """Build the model, tokenizer and inference preprocessing described by `spec` on `device`.

    Raises CheckpointError for a bad local checkpoint file, ValueError when the preprocessing
    or activation the weights were trained with cannot be determined or is contradicted, and
    open_clip's RuntimeError when a tag / hf-hub download or cache lookup fails.
    """
    device = _normalise_device(device)
    precision = _resolve_precision(spec.precision, device)
    checkpoint = _local_checkpoint(spec)
    if checkpoint is not None:
        model = _create(spec, device, None, _checkpoint_preprocess(spec))
        _load_checkpoint_file(model, checkpoint)
        log.info("loaded %s weights from %s", spec.arch, checkpoint)
    elif spec.pretrained is None and not spec.has_schema:  # random init, allowed by ModelSpec
        model = _create(spec, device, None, spec.preprocess_overrides())
    else:  # pretrained tag or schema id: open_clip resolves, downloads and loads the weights
        _check_quick_gelu(spec)
        model = _create(spec, device, spec.pretrained, spec.preprocess_overrides())
    model.eval()
    preprocess_cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in model.visual.preprocess_cfg.items()}
    tokenizer = open_clip.get_tokenizer(spec.arch, cache_dir=spec.cache_dir)
    with torch.inference_mode():
        embed_dim = model.encode_text(tokenizer([""]).to(device)).shape[-1]
    return LoadedClip(
        model=model,
        preprocess=image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False),
        tokenizer=tokenizer,
        device=device,
        embed_dim=int(embed_dim),
        preprocess_cfg=preprocess_cfg,
        precision=precision,
    )


_CACHE: dict[tuple[ModelSpec, torch.device], LoadedClip] = {}
_CACHE_LOCK = threading.Lock()


def get_clip(spec: ModelSpec, device: str | torch.device = "cpu") -> LoadedClip:
    """`load_clip`, memoised per process on (spec, device): load once, reuse across tasks."""
    key = (spec, _normalise_device(device))
    with _CACHE_LOCK:  # held while loading so concurrent callers never load twice
        if key not in _CACHE:
            _CACHE[key] = load_clip(spec, key[1])
        return _CACHE[key]


def clear_clip_cache() -> None:
    """Drop every model cached by `get_clip` (frees their memory once unreferenced)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _normalise_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _resolve_precision(precision: str, device: torch.device) -> str:
    if device.type != "cuda":
        if precision in ("fp16", "bf16"):
            raise ValueError(f"precision {precision!r} needs a CUDA device, got {device}")
        return "fp32"
    return "fp16" if precision == "auto" else precision


def _local_checkpoint(spec: ModelSpec) -> Path | None:
    """The checkpoint file named by `spec.pretrained`, or None for a tag / schema / random init."""
    if spec.has_schema or spec.pretrained is None:
        return None
    if open_clip.is_pretrained_cfg(spec.arch, spec.pretrained):
        return None
    path = Path(spec.pretrained)
    if not path.is_file():
        tags = open_clip.list_pretrained_tags_by_model(spec.arch)
        raise CheckpointError(
            f"checkpoint {spec.pretrained!r}: no such file, and not a pretrained tag of {spec.arch} "
            f"(known tags: {tags})"
        )
    return path


def _check_quick_gelu(spec: ModelSpec) -> None:
    """Refuse a tag trained with QuickGELU on an arch without it (open_clip only warns)."""
    if spec.has_schema:
        return
    tag_quick = open_clip.get_pretrained_cfg(spec.arch, spec.pretrained).get("quick_gelu", False)
    arch_quick = (open_clip.get_model_config(spec.arch) or {}).get("quick_gelu", False)
    if tag_quick != arch_quick:
        variant = f"{spec.arch}-quickgelu" if tag_quick else spec.arch.removesuffix("-quickgelu")
        raise ValueError(
            f"pretrained {spec.pretrained!r} was trained with quick_gelu={tag_quick} but {spec.arch} "
            f"has quick_gelu={arch_quick}; use arch {variant!r}"
        )


def _checkpoint_preprocess(spec: ModelSpec) -> dict:
    """Preprocessing for a bare checkpoint file, which records none itself.

    Values not set on the spec come from the arch's published pretrained tags when they all
    agree; if they disagree the caller must choose. Archs without tags get open_clip's defaults.
    """
    resolved = spec.preprocess_overrides()
    missing = [key for key in PREPROCESS_KEYS if key not in resolved]
    tags = open_clip.list_pretrained_tags_by_model(spec.arch)
    if not tags:
        if missing:
            log.warning(
                "%s has no published pretrained config; checkpoint %s uses open_clip's default %s",
                spec.arch, spec.pretrained, {key: getattr(PreprocessCfg(), key) for key in missing},
            )
        return resolved
    for key in missing:
        by_tag = {tag: open_clip.get_pretrained_cfg(spec.arch, tag).get(key) for tag in tags}
        if len(set(by_tag.values())) > 1:
            raise ValueError(
                f"cannot tell the {key} checkpoint {spec.pretrained} was trained with: the pretrained "
                f"tags of {spec.arch} disagree ({by_tag}); set ModelSpec.{key} explicitly"
            )
        resolved[key] = by_tag[tags[0]]
    return resolved


def _create(spec: ModelSpec, device: torch.device, pretrained: str | None, preprocess: dict) -> torch.nn.Module:
    """open_clip's factory; loads weights (strictly, weights_only) only for tags and schema ids."""
    return open_clip.create_model(
        spec.arch,
        pretrained,
        precision="fp32",
        device=device,
        force_image_size=spec.image_size,
        force_preprocess_cfg=preprocess,
        pretrained_text=False,  # never fetch base HF text-tower weights behind our back
        cache_dir=spec.cache_dir,
        # open_clip only warns and keeps random weights when an hf-hub weight file is missing.
        require_pretrained=pretrained is not None or spec.has_schema,
        weights_only=True,
    )


def _load_checkpoint_file(model: torch.nn.Module, path: Path) -> None:
    """Strictly load a state_dict file (bare, or under "state_dict"; "module." prefixes stripped)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            checkpoint = load_file(path, device="cpu")
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle garbage, disallowed globals, I/O errors...
        raise CheckpointError(f"checkpoint {path} could not be read: {type(exc).__name__}: {exc}") from exc
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    if not (
        isinstance(checkpoint, dict)
        and checkpoint
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in checkpoint.items())
    ):
        raise CheckpointError(f"checkpoint {path} does not hold a state_dict of named tensors")
    state_dict = {key.removeprefix("module."): value for key, value in checkpoint.items()}
    resize_pos_embed(state_dict, model)  # no-op unless ModelSpec.image_size changed the grid
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not match the architecture: {exc}") from exc
