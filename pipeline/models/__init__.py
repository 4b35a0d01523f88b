"""CLIP model loading (open_clip) and the pure image/caption embedding core.

Importing this package registers the `curate-tiny` test architecture with open_clip, so
it resolves in every process that uses these models (Spark executors included).
"""

from pipeline.models.encode import EncodedBatch, ImageDecodeError, encode_pairs, select_device, set_torch_threads
from pipeline.models.loading import (
    CheckpointError,
    LoadedClip,
    ModelSpec,
    clear_clip_cache,
    get_clip,
    load_clip,
)
from pipeline.models.tiny import TINY_ARCH, make_tiny_checkpoint, make_tiny_hf_cache, register_tiny

register_tiny()

__all__ = [
    "TINY_ARCH",
    "CheckpointError",
    "EncodedBatch",
    "ImageDecodeError",
    "LoadedClip",
    "ModelSpec",
    "clear_clip_cache",
    "encode_pairs",
    "get_clip",
    "load_clip",
    "make_tiny_checkpoint",
    "make_tiny_hf_cache",
    "register_tiny",
    "select_device",
    "set_torch_threads",
]
