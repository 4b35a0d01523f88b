"""Evaluation sets for decontamination, read on the driver (they are small): img2dataset shards
(a folder of tars, a glob or a brace pattern; read with ingest's own `read_shard`, so the sha256 uid
and the pHash are computed exactly as for the pool) or a plain folder of image files (searched
recursively for .jpg/.jpeg/.png/.webp). Unusable eval images (undecodable, over ingest's caps) are
skipped and counted.

An eval sample's id is `eval:<set path as configured>/<shard name>/<key>` for shards and
`eval:<set path>/<file path relative to the set>` for image folders.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.core import io
from pipeline.core.config import IngestConfig
from pipeline.core.model_spec import ModelSpec
from pipeline.core.tars import read_member
from pipeline.imaging import IMAGE_EXTS, ImageRejected, probe_image
from pipeline.core.shard_reader import ShardTask, read_shard
from schemas import EVAL_SAMPLES


@dataclass(frozen=True)
class EvalImage:
    """One usable eval image and where its bytes are (a tar member's data, or a whole file)."""

    eval_id: str
    uid: str
    phash: int
    path: str
    offset: int
    size: int


def _shard_images(spec: str, cfg: IngestConfig) -> tuple[list[EvalImage], int]:
    images, unusable = [], 0
    for path, name in io.shard_names(io.list_shards(spec)).items():
        rows, _ = read_shard(ShardTask(path, name), cfg)
        for r in rows:
            if r["quarantine_reason"] is not None:
                unusable += 1
                continue
            images.append(EvalImage(f"eval:{spec.rstrip('/')}/{r['sample_id']}", r["uid"], r["phash"], path,
                                    r["image_offset"], r["image_bytes"]))
    return images, unusable


def _image_files(spec: str) -> list[str]:
    """Image files under the folder `spec`, sorted (as the filesystem spells them)."""
    fs, root = io.filesystem(spec)
    if not fs.isdir(root):
        raise io.InputError(f"eval set '{spec}' holds no .tar shards and is not a folder")
    return sorted(p for p in fs.find(root) if p.rsplit(".", 1)[-1].lower() in IMAGE_EXTS)


def eval_set_files(spec: str) -> list[str]:
    """The files an eval set is read from: its tars, or its image files (full URLs for remote sets)."""
    try:
        return io.list_shards(spec)
    except io.InputError:
        fs, _ = io.filesystem(spec)
        return [io.with_protocol(fs, p, spec) for p in _image_files(spec)]


def _folder_images(spec: str, cfg: IngestConfig) -> tuple[list[EvalImage], int]:
    fs, root = io.filesystem(spec)
    images, unusable = [], 0
    for path in _image_files(spec):
        size = fs.size(path)
        with fs.open(path, "rb") as f:
            data = f.read(cfg.max_image_bytes + 1)
        try:
            if len(data) > cfg.max_image_bytes:
                raise ImageRejected("image_too_large")
            info = probe_image(data, cfg.max_pixels, cfg.max_aspect)
        except ImageRejected:
            unusable += 1
            continue
        eval_id = f"eval:{spec.rstrip('/')}/{posixpath.relpath(path, root)}"
        full = io.with_protocol(fs, path, spec)
        images.append(EvalImage(eval_id, hashlib.sha256(data).hexdigest(), info.phash, full, 0, size))
    return images, unusable


def read_eval_set(spec: str, cfg: IngestConfig) -> tuple[list[EvalImage], int]:
    """(usable images of one eval set, sorted by eval_id; how many were unusable). `spec` holding
    .tar shards is read as img2dataset output, else as a folder of image files."""
    try:
        images, unusable = _shard_images(spec, cfg)
    except io.InputError:
        images, unusable = _folder_images(spec, cfg)
    return sorted(images, key=lambda im: im.eval_id), unusable


def image_bytes(images: list[EvalImage]) -> Iterator[bytes]:
    """The encoded bytes of each image, in order."""
    for im in images:
        fs, path = io.filesystem(im.path)
        with fs.open(path, "rb") as f:
            yield read_member(f, im.offset, im.size)


def embed_images(images: list[EvalImage], model: ModelSpec, batch_size: int) -> np.ndarray:
    """Image embeddings (float32 [n, d], unit norm) with the same loading, preprocessing and encoder
    as the embed stage, on the driver (its GPU when it has one)."""
    # torch and open_clip are imported only where images are encoded (slow to import, heavy)
    import torch

    from pipeline.models import encode_pairs, get_clip, select_device

    clip = get_clip(model, select_device(["0"] if torch.cuda.is_available() else None))
    out = encode_pairs(clip, image_bytes(images), [""] * len(images), batch_size=batch_size)
    return out.image_emb


def eval_table(images: list[EvalImage], embeddings: np.ndarray | None) -> pa.Table:
    """EVAL_SAMPLES rows (image_emb null without embeddings)."""
    emb = [None] * len(images) if embeddings is None else list(embeddings)
    return pa.table(
        {
            "eval_id": [im.eval_id for im in images],
            "uid": [im.uid for im in images],
            "phash": pa.array([im.phash for im in images], pa.int64()),
            "image_emb": pa.array(emb, pa.list_(pa.float32())),
        },
        schema=EVAL_SAMPLES,
    )
