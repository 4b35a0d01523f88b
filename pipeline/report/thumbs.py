"""Small base64 JPEG thumbnails of samples, read from their source tars at ingest's offsets.

The bytes are untrusted (removed and quarantined samples included): only the JPEG/PNG/WEBP
decoders are used, the pixel cap is checked before decoding, and any failure gives no thumbnail
rather than failing the report.
"""

from __future__ import annotations

import base64
import io as pyio
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from PIL import Image

from pipeline.core import io
from pipeline.core.tars import read_member
from pipeline.imaging import DECODERS, to_mode

SIZE = 112


def thumbnail(data: bytes, max_pixels: int, size: int = SIZE) -> str | None:
    """A `data:image/jpeg;base64,...` URI of the image fitted in size x size, or None if the bytes
    are not a decodable image within `max_pixels`."""
    try:
        image = Image.open(pyio.BytesIO(data), formats=DECODERS)
        if image.width * image.height > max_pixels:
            return None
        image.draft("RGB", (size * 2, size * 2))
        image = to_mode(image, "RGB")
        image.thumbnail((size, size))
        buf = pyio.BytesIO()
        image.save(buf, "JPEG", quality=80)
    except Exception:  # untrusted bytes: PIL raises many types; the tile then says "no image"
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def image_bytes(rows: Iterable[dict[str, Any]]) -> Iterator[bytes | None]:
    """Each row's image bytes (None for rows without an image or whose tar cannot be read)."""
    handles: dict[str, BinaryIO | None] = {}
    try:
        for row in rows:
            path = row["shard"]
            if row["image_offset"] is None or row["image_bytes"] is None:
                yield None
                continue
            if path not in handles:
                fs, p = io.filesystem(path)
                try:
                    handles[path] = fs.open(p, "rb")
                except OSError:
                    handles[path] = None
            handle = handles[path]
            try:
                yield read_member(handle, row["image_offset"], row["image_bytes"]) if handle else None
            except (OSError, EOFError):
                yield None
    finally:
        for handle in handles.values():
            if handle is not None:
                handle.close()


def thumbnails(rows: list[dict[str, Any]], max_pixels: int) -> list[str | None]:
    """Thumbnails (data URIs, or None) of `rows` (with shard, image_offset, image_bytes), in order."""
    return [thumbnail(data, max_pixels) if data is not None else None for data in image_bytes(rows)]
