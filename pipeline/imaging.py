"""Image checks for untrusted bytes: bounded decode, size, and a 64-bit DCT perceptual hash."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

# Decoding is always bounded by our own pixel cap, checked before pixels are read.
Image.MAX_IMAGE_PIXELS = None

# Only the decoders of the formats a sample may be (jpg/png/webp members): PIL's other plugins are
# attack surface we do not need (EPS, for one, runs Ghostscript).
DECODERS = ("JPEG", "PNG", "WEBP")


class ImageRejected(ValueError):
    """The bytes are not a usable image; `reason` is the quarantine reason code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    phash: int  # signed 64-bit


@lru_cache(maxsize=1)
def _dct_matrix(n: int = 32) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


def phash(image: Image.Image) -> int:
    """pHash: 32x32 greyscale, 2-D DCT, 8x8 low frequencies above their median -> 64 bits (signed)."""
    grey = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    d = _dct_matrix()
    low = (d @ grey @ d.T)[:8, :8].ravel()
    bits = low > np.median(low)
    value = int("".join("1" if b else "0" for b in bits), 2)
    return value - (1 << 64) if value >= (1 << 63) else value


def probe_image(data: bytes, max_pixels: int) -> ImageInfo:
    """Fully decode `data` under a pixel cap; raise ImageRejected with a reason code if unusable."""
    if not data:
        raise ImageRejected("empty_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=DECODERS)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageRejected("too_many_pixels", f"{width}x{height}")
            image.load()
    except ImageRejected:
        raise
    except Exception as err:  # PIL raises many types for broken input
        raise ImageRejected("decode_error", f"{type(err).__name__}: {err}") from None
    return ImageInfo(width=width, height=height, phash=phash(image))
