"""Embed image/caption pairs with a loaded CLIP model (pure compute, no Spark).

Decoding, preprocessing and tokenisation of batch k+1 run on a thread pool while the
model runs batch k, so CPU-side work overlaps the forward pass; on CUDA, batches go to the device
through pinned memory.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.imaging import to_mode
from pipeline.models.loading import LoadedClip

log = logging.getLogger(__name__)

_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class ImageDecodeError(ValueError):
    """An input image could not be decoded or preprocessed; `index` is its position in the input."""

    def __init__(self, index: int, cause: Exception) -> None:
        super().__init__(f"image at index {index} could not be decoded: {type(cause).__name__}: {cause}")
        self.index = index


@dataclass
class EncodedBatch:
    """Embeddings of n image/caption pairs."""

    image_emb: np.ndarray  # float32 [n, d], L2-normalised
    text_emb: np.ndarray  # float32 [n, d], L2-normalised
    clip_score: np.ndarray  # float32 [n], cosine(image_emb, text_emb)


def encode_pairs(
    clip: LoadedClip,
    images: Iterable[bytes],
    captions: Iterable[str],
    *,
    batch_size: int = 256,
    decode_workers: int = 2,
    progress: Callable[[int], None] | None = None,
) -> EncodedBatch:
    """Embed encoded images and their captions in batches of `batch_size`.

    `images` and `captions` are consumed lazily and must have the same length (ValueError
    otherwise). `progress`, if given, is called with the number of pairs finished after each
    batch. Raises ImageDecodeError naming the index of an image that fails to decode.
    """
    if batch_size < 1 or decode_workers < 1:
        raise ValueError(f"batch_size and decode_workers must be >= 1, got {batch_size}, {decode_workers}")
    image_parts: list[torch.Tensor] = []
    text_parts: list[torch.Tensor] = []
    batches = _batches(zip(images, captions, strict=True), batch_size)
    with ThreadPoolExecutor(max_workers=decode_workers, thread_name_prefix="clip-decode") as pool:
        pending = _prepare(pool, clip, next(batches, None), start=0)
        done = 0
        while pending is not None:
            pixel_futures, token_future = pending
            pixels = torch.stack([future.result() for future in pixel_futures])
            tokens = token_future.result()
            done += len(pixel_futures)
            pending = _prepare(pool, clip, next(batches, None), start=done)  # prefetch the next batch
            image_emb, text_emb = _forward(clip, pixels, tokens)
            image_parts.append(image_emb)
            text_parts.append(text_emb)
            if progress is not None:
                progress(len(pixel_futures))
    if not image_parts:
        empty = np.zeros((0, clip.embed_dim), dtype=np.float32)
        return EncodedBatch(empty, empty.copy(), np.zeros(0, dtype=np.float32))
    image_emb = torch.cat(image_parts).numpy()
    text_emb = torch.cat(text_parts).numpy()
    clip_score = np.einsum("nd,nd->n", image_emb, text_emb).astype(np.float32)
    return EncodedBatch(image_emb=image_emb, text_emb=text_emb, clip_score=clip_score)


def set_torch_threads(n: int) -> None:
    """Size torch's intra-op thread pool to the `n` cores a task was given (at least 1)."""
    torch.set_num_threads(max(1, int(n)))


def select_device(gpu_addresses: list[str] | None) -> torch.device:
    """cuda:<first address> for a task given GPU addresses (e.g. Spark's "gpu" resource), else cpu."""
    if gpu_addresses and torch.cuda.is_available():
        return torch.device("cuda", int(gpu_addresses[0]))
    if gpu_addresses:
        log.warning("GPU addresses %s were assigned but CUDA is unavailable; using cpu", gpu_addresses)
    return torch.device("cpu")


def _batches(pairs: Iterable[tuple[bytes, str]], size: int) -> Iterator[list[tuple[bytes, str]]]:
    iterator = iter(pairs)
    while batch := list(islice(iterator, size)):
        yield batch


def _prepare(
    pool: ThreadPoolExecutor, clip: LoadedClip, batch: list[tuple[bytes, str]] | None, start: int
) -> tuple[list[Future[torch.Tensor]], Future[torch.Tensor]] | None:
    """Submit decoding of every image and tokenisation of the captions of `batch`."""
    if batch is None:
        return None
    pixels = [pool.submit(_decode, clip, data, start + i) for i, (data, _) in enumerate(batch)]
    tokens = pool.submit(clip.tokenizer, [caption for _, caption in batch])
    return pixels, tokens


def _decode(clip: LoadedClip, data: bytes, index: int) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return clip.preprocess(to_mode(image, "RGB"))
    except Exception as exc:  # PIL raises many types for broken input
        raise ImageDecodeError(index, exc) from exc


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device`; to CUDA through pinned memory, asynchronously."""
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def _forward(clip: LoadedClip, pixels: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised float32 CPU embeddings of one batch."""
    dtype = _AUTOCAST_DTYPES.get(clip.precision)
    autocast = torch.autocast(clip.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    with torch.inference_mode():
        with autocast:
            image_emb = clip.model.encode_image(_to_device(pixels, clip.device))
            text_emb = clip.model.encode_text(_to_device(tokens, clip.device))
        return F.normalize(image_emb.float(), dim=-1).cpu(), F.normalize(text_emb.float(), dim=-1).cpu()
