"""Streaming reader of WebDataset/img2dataset tars that never trusts member names.

Members are read in memory only (nothing is extracted to disk). Consecutive members that share a
key form one sample, as webdataset groups them; the data offset of each member is kept so later
stages can read the image bytes straight from the tar without re-scanning it.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable

from pipeline.core import io

_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


@dataclass
class Member:
    offset: int  # offset of the member's data in the tar
    size: int
    data: bytes | None  # None when the member was larger than the read cap


@dataclass
class TarSample:
    key: str
    members: dict[str, Member] = field(default_factory=dict)
    problem: str | None = None  # a quarantine reason found while reading the tar itself


def unsafe_member(info: tarfile.TarInfo) -> bool:
    """True for links, devices and names that are absolute or climb out of the archive."""
    if not (info.isfile() or info.isdir()):
        return True
    name = info.name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return True
    return ".." in posixpath.normpath(name).split("/") or ".." in name.split("/")


def split_key(name: str) -> tuple[str, str] | None:
    """WebDataset's rule: the key is the path up to the first dot of the file name."""
    m = _KEY_EXT.match(name)
    return (m.group(1), m.group(2).lower()) if m else None


def iter_tar_samples(fileobj: BinaryIO, max_member_bytes: int) -> Iterator[TarSample | str]:
    """Yield samples in tar order; a final string is yielded if the tar is cut short or corrupt.

    Members with unsafe names yield a sample whose `problem` is `unsafe_member_path` (keyed by the
    raw name) and their data is never read. Python's tarfile ends quietly at a truncated or garbled
    header, so a seekable tar must also end with a zero block (the end-of-archive marker); if it
    does not, the last sample read is marked `truncated_shard` too (its later members may be lost).
    """
    current: TarSample | None = None
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as tar:
            for info in tar:
                if info.isdir():
                    continue
                if unsafe_member(info):
                    if current is not None:
                        yield current
                        current = None
                    yield TarSample(key=info.name, problem="unsafe_member_path")
                    continue
                parts = split_key(info.name)
                if parts is None:
                    continue  # a file without an extension belongs to no sample
                key, ext = parts
                if current is not None and (current.key != key or ext in current.members):
                    yield current
                    current = None
                if current is None:
                    current = TarSample(key=key)
                data = None
                if info.size <= max_member_bytes:
                    reader = tar.extractfile(info)
                    data = reader.read() if reader is not None else b""
                    if len(data) != info.size:
                        raise tarfile.ReadError("unexpected end of data")
                current.members[ext] = Member(offset=info.offset_data, size=info.size, data=data)
            end = tar.offset
        if not _end_marker_at(fileobj, end):
            raise tarfile.ReadError(f"no end-of-archive marker at offset {end}: truncated or corrupt")
    except (tarfile.TarError, EOFError, OSError) as err:
        if current is not None:
            current.problem = "truncated_shard"
            yield current
        yield f"{type(err).__name__}: {err}"
        return
    if current is not None:
        yield current


def _end_marker_at(fileobj: BinaryIO, offset: int) -> bool:
    """True if a zero block starts at `offset`, or if the stream cannot seek back to tell."""
    try:
        fileobj.seek(offset)
    except (OSError, ValueError):
        return True
    return fileobj.read(tarfile.BLOCKSIZE) == bytes(tarfile.BLOCKSIZE)


def read_member(fileobj: BinaryIO, offset: int, size: int) -> bytes:
    """Read `size` bytes at `offset` (a member's data) from an open, seekable tar; EOFError if the
    file ends first."""
    fileobj.seek(offset)
    data = fileobj.read(size)
    if len(data) != size:
        raise EOFError(f"short read at offset {offset}: {len(data)} of {size} bytes")
    return data


class SourceChanged(io.InputError):
    """A source tar is gone, or no longer holds the bytes ingest saw."""


def read_source_images(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """The image bytes of ingested samples (rows with shard, image_offset, image_bytes, uid and
    sample_id), read back from their source tars in order and checked against the sha256 ingest
    recorded (the uid); SourceChanged if a tar is gone, shorter, or holds other bytes."""
    handles: dict[str, BinaryIO] = {}
    try:
        for row in rows:
            path = row["shard"]
            if path not in handles:
                fs, p = io.filesystem(path)
                try:
                    handles[path] = fs.open(p, "rb")
                except FileNotFoundError:
                    raise SourceChanged(f"source shard {path} is gone since ingest") from None
            try:
                data = read_member(handles[path], row["image_offset"], row["image_bytes"])
            except EOFError:
                raise SourceChanged(f"source shard {path} is shorter than at ingest") from None
            if hashlib.sha256(data).hexdigest() != row["uid"]:
                raise SourceChanged(f"source shard {path}: bytes of {row['sample_id']} changed since ingest")
            yield data
    finally:
        for handle in handles.values():
            handle.close()


def report_source_changed(shard: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A per-shard task body's result, with a SourceChanged returned as `{"shard", "source_changed"}`
    rather than raised: a retry cannot heal it, and the driver names every such shard in one error
    (`raise_if_source_changed`)."""
    try:
        return work()
    except SourceChanged as err:
        return {"shard": shard, "source_changed": str(err)}


def raise_if_source_changed(what: str, stats: list[dict[str, Any]]) -> None:
    """Raise one SourceChanged naming the sources if any task's stats carry `source_changed`."""
    problems = sorted({s["source_changed"] for s in stats if "source_changed" in s})
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise SourceChanged(f"{what}: {'; '.join(problems[:3])}{more}; rerun to ingest the inputs as they are now")
