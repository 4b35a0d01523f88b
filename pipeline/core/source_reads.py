"""Image bytes read back from their source tars at the offsets ingest recorded, checked by sha256.

A task asks for many images at once. Their reads are sorted by source tar and offset, and
neighbouring ranges (gap <= `MAX_GAP`) are merged into one read, so each source is read forward
in few large requests: one open handle per local tar, `fs.cat_ranges` (concurrent ranged GETs) on
object storage, never a buffered reader per sample. Work is cut into blocks of at most
`BLOCK_BYTES` of images, so memory stays bounded whatever the task's size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import merge_offset_ranges

from pipeline.core import io
from pipeline.core.tars import SourceChanged

MAX_GAP = 1 << 20  # merge two ranges of one tar when at most this many bytes lie between them
MAX_READ = 64 << 20  # but keep a merged read below this size
BLOCK_BYTES = 256 << 20  # images held in memory at once, at most (one image may exceed it)


@dataclass(frozen=True)
class ImageRefs:
    """Where a task's images are, in the order it wants them (sequences of equal length)."""

    shard: Sequence[str]  # source tar paths
    offset: Sequence[int]  # image data offsets inside the tars
    size: Sequence[int]  # image sizes in bytes
    uid: Sequence[str]  # sha256 hex digest of each image
    sample_id: Sequence[str]  # names the sample in errors

    def __len__(self) -> int:
        return len(self.shard)


def iter_images(refs: ImageRefs, block_bytes: int = BLOCK_BYTES) -> Iterator[bytes]:
    """Each image's bytes, in the order of `refs`, checked against its uid; SourceChanged if a tar
    is gone, shorter than at ingest, or holds other bytes there."""
    sizes = np.asarray(refs.size, dtype=np.int64)
    ends = np.cumsum(sizes)
    start = 0
    while start < len(refs):
        limit = (ends[start - 1] if start else 0) + block_bytes
        stop = max(start + 1, int(np.searchsorted(ends, limit, side="right")))
        yield from _read_block(refs, range(start, stop))
        start = stop


def _sorted(refs: ImageRefs, rows: range) -> tuple[list[int], list[str], list[int], list[int]]:
    """rows sorted by (tar, offset), with their tars, start and stop offsets."""
    order = sorted(rows, key=lambda i: (refs.shard[i], refs.offset[i]))
    paths = [refs.shard[i] for i in order]
    starts = [int(refs.offset[i]) for i in order]
    stops = [start + int(refs.size[i]) for start, i in zip(starts, order)]
    return order, paths, starts, stops


def plan_reads(refs: ImageRefs, rows: range) -> tuple[list[str], list[int], list[int]]:
    """The (tars, starts, stops) of the merged reads that cover `rows`, in tar and offset order."""
    _, paths, starts, stops = _sorted(refs, rows)
    return merge_offset_ranges(paths, starts, stops, max_gap=MAX_GAP, max_block=MAX_READ, sort=False)


def _read_block(refs: ImageRefs, rows: range) -> list[bytes]:
    order, paths, starts, stops = _sorted(refs, rows)
    m_paths, m_starts, m_stops = plan_reads(refs, rows)
    chunks = _read_ranges(m_paths, m_starts, m_stops)
    out: list[bytes | None] = [None] * len(rows)
    chunk = 0
    for i, path, start, stop in zip(order, paths, starts, stops):
        while not (m_paths[chunk] == path and m_starts[chunk] <= start and stop <= m_stops[chunk]):
            chunk += 1
        base = start - m_starts[chunk]
        data = chunks[chunk][base : base + stop - start]
        if len(data) != stop - start:
            raise SourceChanged(f"source shard {path} is shorter than at ingest")
        if hashlib.sha256(data).hexdigest() != refs.uid[i]:
            raise SourceChanged(f"source shard {path}: bytes of {refs.sample_id[i]} changed since ingest")
        out[i - rows.start] = data
    return out  # type: ignore[return-value]


def _read_ranges(paths: list[str], starts: list[int], stops: list[int]) -> list[bytes]:
    """The bytes of each (path, start, stop) range, in order (short where a file ends early)."""
    out: list[bytes] = []
    i = 0
    while i < len(paths):
        j = i
        while j < len(paths) and paths[j] == paths[i]:
            j += 1
        fs, p = io.filesystem(paths[i])
        try:
            if isinstance(fs, LocalFileSystem):
                with fs.open(p, "rb") as f:
                    for start, stop in zip(starts[i:j], stops[i:j]):
                        f.seek(start)
                        out.append(f.read(stop - start))
            else:
                out.extend(fs.cat_ranges([p] * (j - i), starts[i:j], stops[i:j], on_error="raise"))
        except FileNotFoundError:
            raise SourceChanged(f"source shard {paths[i]} is gone since ingest") from None
        i = j
    return out
