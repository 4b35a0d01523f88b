"""encode_pairs against direct open_clip forward passes on the curate-tiny model."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.models import (
    TINY_ARCH,
    ImageDecodeError,
    LoadedClip,
    ModelSpec,
    encode_pairs,
    load_clip,
    make_tiny_checkpoint,
    select_device,
    set_torch_threads,
)


# Mixed modes and formats; sizes vary per image.
FORMATS = [("RGB", "PNG"), ("RGBA", "PNG"), ("L", "PNG"), ("P", "GIF"), ("RGB", "JPEG"), ("CMYK", "JPEG")]


def _image(i: int) -> bytes:
    mode, fmt = FORMATS[i % len(FORMATS)]
    pixels = np.random.default_rng(i).integers(0, 256, (60 - 3 * i, 24 + 7 * i, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


# 11 pairs: not a multiple of the batch size used below.
IMAGES = [_image(i) for i in range(11)]
CAPTIONS = [f"photo number {i} of a {'cat' if i % 2 else 'dog'}" for i in range(10)] + [""]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> LoadedClip:
    checkpoint = make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")
    return load_clip(ModelSpec(TINY_ARCH, pretrained=str(checkpoint)))


def _direct(clip: LoadedClip) -> tuple[np.ndarray, np.ndarray]:
    pixels = torch.stack([clip.preprocess(Image.open(io.BytesIO(data)).convert("RGB")) for data in IMAGES])
    with torch.no_grad():
        image = F.normalize(clip.model.encode_image(pixels), dim=-1)
        text = F.normalize(clip.model.encode_text(clip.tokenizer(CAPTIONS)), dim=-1)
    return image.numpy(), text.numpy()


@pytest.mark.parametrize("decode_workers", [1, 3])
def test_matches_direct_forward(clip: LoadedClip, decode_workers: int) -> None:
    calls: list[int] = []
    result = encode_pairs(
        clip, iter(IMAGES), iter(CAPTIONS), batch_size=4, decode_workers=decode_workers, progress=calls.append
    )
    assert calls == [4, 4, 3]
    image, text = _direct(clip)
    for got, want in ((result.image_emb, image), (result.text_emb, text)):
        assert got.dtype == np.float32 and got.shape == (11, 64)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert np.all(np.einsum("nd,nd->n", got, want) > 0.999)
    assert result.clip_score.dtype == np.float32 and result.clip_score.shape == (11,)
    np.testing.assert_allclose(result.clip_score, np.sum(result.image_emb * result.text_emb, axis=1), atol=1e-6)
    # Rows are independent: embeddings don't depend on how the input was batched.
    whole = encode_pairs(clip, IMAGES, CAPTIONS, batch_size=64)
    np.testing.assert_allclose(whole.image_emb, result.image_emb, atol=1e-5)


def test_undecodable_image_names_its_index(clip: LoadedClip) -> None:
    images = list(IMAGES)
    images[6] = b"\x89PNG\r\n\x1a\n not really"
    with pytest.raises(ImageDecodeError, match="index 6") as info:
        encode_pairs(clip, images, CAPTIONS, batch_size=4)
    assert info.value.index == 6


def test_length_mismatch_is_an_error(clip: LoadedClip) -> None:
    with pytest.raises(ValueError, match="shorter"):
        encode_pairs(clip, IMAGES, CAPTIONS[:-1], batch_size=4)


def test_empty_input(clip: LoadedClip) -> None:
    result = encode_pairs(clip, [], [])
    assert result.image_emb.shape == result.text_emb.shape == (0, 64)
    assert result.clip_score.shape == (0,) and result.clip_score.dtype == np.float32


def test_bad_arguments(clip: LoadedClip) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        encode_pairs(clip, IMAGES, CAPTIONS, batch_size=0)


def test_select_device() -> None:
    assert select_device(None) == torch.device("cpu")
    assert select_device([]) == torch.device("cpu")
    expected = torch.device("cuda", 1) if torch.cuda.is_available() else torch.device("cpu")
    assert select_device(["1", "2"]) == expected


def test_set_torch_threads() -> None:
    before = torch.get_num_threads()
    try:
        set_torch_threads(1)
        assert torch.get_num_threads() == 1
        set_torch_threads(0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
