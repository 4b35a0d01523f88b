"""Pixel conversion and caps: high-depth images are scaled (never clipped), extreme shapes rejected."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline.imaging import ImageRejected, probe_image, to_mode


def png16(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG (greyscale for [h, w], RGB for [h, w, 3]) of uint16 `pixels`, written by hand:
    PIL cannot write one."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w = pixels.shape[:2]
    colour = 0 if pixels.ndim == 2 else 2
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def png8(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def scene(seed: int, channels: int = 0) -> np.ndarray:
    """A smooth random 8-bit picture (pHash sees structure, not noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6) + ((channels,) if channels else ()), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((64, 64), Image.Resampling.BILINEAR))


@pytest.mark.parametrize("channels", [0, 3])
def test_16_bit_pngs_hash_as_their_8_bit_versions_and_apart(channels: int) -> None:
    a8, b8 = scene(1, channels), scene(2, channels)
    a16, b16 = (png16(p.astype(np.uint16) * 257) for p in (a8, b8))  # the same pictures at 16 bits
    if channels == 0:
        assert Image.open(io.BytesIO(a16)).mode == "I;16"
    ha, hb = probe_image(a16, 10**6).phash, probe_image(b16, 10**6).phash
    assert ha != hb  # clipped to 255, both were all white and hashed alike
    assert (ha, hb) == (probe_image(png8(a8), 10**6).phash, probe_image(png8(b8), 10**6).phash)


def test_high_depth_pixels_are_scaled_for_every_conversion() -> None:
    grey = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    image = Image.open(io.BytesIO(png16(grey)))
    assert np.asarray(to_mode(image, "RGB"))[0, :, 0].tolist() == [0, 100, 255]
    assert np.asarray(to_mode(image, "L")).tolist() == [[0, 100, 255]]


def test_extreme_aspect_is_rejected_from_the_header() -> None:
    with pytest.raises(ImageRejected) as err:
        probe_image(png8(np.zeros((2, 60000), dtype=np.uint8)), max_pixels=10**6, max_aspect=50)
    assert err.value.reason == "extreme_aspect" and "60000x2" in str(err.value)
    assert probe_image(png8(np.zeros((2, 100), dtype=np.uint8)), 10**6, max_aspect=50).width == 100
