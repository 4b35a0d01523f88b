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

# The image member extensions a sample may have, in order of preference: the one set that ingest,
# verify, export and eval sets use. `.jpeg` is written out as `.jpg`, the name loaders look for.
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
_CANONICAL_EXT = {"jpeg": "jpg"}


def canonical_ext(ext: str) -> str:
    """The extension an image member with extension `ext` is exported under (jpeg -> jpg)."""
    return _CANONICAL_EXT.get(ext, ext)


# The extensions of exported image members (what readers pass to webdataset's `to_tuple`).
OUTPUT_EXTS = tuple(dict.fromkeys(canonical_ext(e) for e in IMAGE_EXTS))


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


# Modes deeper than 8 bits per channel that the decoders give (16-bit greyscale PNG: "I;16"), and
# the value that is full white in each: they are scaled to 0..255, never clipped.
_FULL_SCALE = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535}


def eight_bit(image: Image.Image) -> Image.Image:
    """`image` with 8 bits per channel: a high-depth greyscale image is scaled (v * 255 / 65535,
    rounded), where PIL's own `convert` would clip every value above 255 to white."""
    full = _FULL_SCALE.get(image.mode)
    if full is None:
        return image
    values = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(np.rint(values * (255.0 / full)), 0, 255).astype(np.uint8), "L")


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """`image.convert(mode)` after scaling high-depth pixels to 8 bits (the one way the product
    converts pixels)."""
    return eight_bit(image).convert(mode)


def check_shape(width: int, height: int, max_pixels: int, max_aspect: float) -> None:
    """Raise ImageRejected unless the image is within the pixel and aspect-ratio caps (decoding
    cost follows the pixel count, preprocessing cost also the aspect ratio)."""
    if width * height > max_pixels:
        raise ImageRejected("too_many_pixels", f"{width}x{height}")
    if max(width, height) > max_aspect * max(1, min(width, height)):
        raise ImageRejected("extreme_aspect", f"{width}x{height}")


HASH_SIDE = 32  # pHash works on a HASH_SIDE x HASH_SIDE greyscale thumbnail
DRAFT_SIDE = 2 * HASH_SIDE  # JPEGs are decoded at the smallest DCT scale that keeps this many pixels


def phash(image: Image.Image) -> int:
    """pHash: 32x32 greyscale (Lanczos), 2-D DCT, 8x8 low frequencies above their median -> 64
    bits (signed). An area average instead of Lanczos moves resized copies of the demo's images
    up to 6 bits apart (Lanczos: 4), so near-duplicate recall would drop."""
    thumb = to_mode(image, "L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS)
    grey = np.asarray(thumb, dtype=np.float64)
    d = _dct_matrix()[:8]  # only the 8 lowest frequencies are kept
    low = (d @ grey @ d.T).ravel()
    middle = np.partition(low, (31, 32))[31:33].mean()  # the median of the 64
    return int(np.packbits(low > middle).view(">i8")[0])


def probe_image(data: bytes, max_pixels: int, max_aspect: float = float("inf")) -> ImageInfo:
    """Decode all of `data` under the pixel and aspect caps (checked from the header, before any
    pixel is read); raise ImageRejected with a reason code if unusable.

    A JPEG is decoded in draft mode: greyscale, at the smallest DCT scale (1/2, 1/4, 1/8) that
    keeps DRAFT_SIDE pixels a side. Every entropy-coded block is still read, so a truncated or
    corrupt file fails as it would at full size, for a fraction of the cost; the pHash needs no more.
    """
    if not data:
        raise ImageRejected("empty_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=DECODERS)
            width, height = image.size
            check_shape(width, height, max_pixels, max_aspect)
            if image.format == "JPEG":
                image.draft("L", (DRAFT_SIDE, DRAFT_SIDE))
            image.load()
    except ImageRejected:
        raise
    except Exception as err:  # PIL raises many types for broken input
        raise ImageRejected("decode_error", f"{type(err).__name__}: {err}") from None
    return ImageInfo(width=width, height=height, phash=phash(image))
