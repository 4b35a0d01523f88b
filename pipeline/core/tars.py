"""Streaming reader of WebDataset/img2dataset tars that never trusts member names.

Members are read in memory only (nothing is extracted to disk). Members are grouped into samples
the way webdataset 0.2.86 groups them (`tariterators.base_plus_ext` + `group_by_keys`): the key is
the member's path up to the first dot of its file name (folders included), the rest is the
lower-cased suffix, and consecutive members with one key form one sample. A leading `./` (as
`tar -C dir -cf x.tar .` writes) is not part of the key. Archives concatenated into one file
(`cat a.tar b.tar > c.tar`) are read through, as `tar --ignore-zeros` does. The data offset of each
member (from the start of the file) is kept so later stages can read the image bytes straight from
the tar without re-scanning it.
"""

from __future__ import annotations

import posixpath
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable

from pipeline.core import io
from pipeline.imaging import IMAGE_EXTS, canonical_ext

# webdataset 0.2.86 tariterators.base_plus_ext
_BASE_PLUS_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_SCAN = 1 << 16  # bytes read at a time when skipping the zero blocks between concatenated archives


@dataclass
class Member:
    offset: int  # offset of the member's data in the file
    size: int
    data: bytes | None  # None when the member was larger than the read cap


@dataclass
class TarSample:
    key: str
    members: dict[str, Member] = field(default_factory=dict)  # suffix ("jpg", "txt", "b.jpg") -> member
    problem: str | None = None  # a quarantine reason found while reading the tar itself

    def field(self, name: str) -> Member | None:
        """The member for `name` ("txt", "json", "jpg"): the member with that suffix, else the one
        member whose suffix ends with `.name` (a dotted key's "b.txt")."""
        if name in self.members:
            return self.members[name]
        found = [m for suffix, m in self.members.items() if suffix.endswith(f".{name}")]
        return found[0] if len(found) == 1 else None

    def image(self) -> tuple[str, Member] | None:
        """(canonical extension, member) of the sample's image (the first of IMAGE_EXTS present)."""
        for ext in IMAGE_EXTS:
            member = self.field(ext)
            if member is not None:
                return canonical_ext(ext), member
        return None


def unsafe_member(info: tarfile.TarInfo) -> bool:
    """True for links, devices and names that are absolute or climb out of the archive."""
    if not (info.isfile() or info.isdir()):
        return True
    name = info.name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return True
    return ".." in posixpath.normpath(name).split("/") or ".." in name.split("/")


def split_key(name: str) -> tuple[str, str] | None:
    """(key, lower-cased suffix) of a member name as webdataset groups it, without a leading `./`;
    None for a name whose file name has no dot after its first character (it belongs to no sample)."""
    while name.startswith("./"):
        name = name[2:]
    m = _BASE_PLUS_EXT.match(name)
    return (m.group(1), m.group(2).lower()) if m else None


def match_key(key: str) -> str:
    """The key an img2dataset parquet row and a tar sample are matched on: the file-name part of
    the key (folders and `./` dropped) up to its first dot, and digits as the number they spell
    (so a parquet that stores keys as integers matches zero-padded tar keys)."""
    name = str(key).replace("\\", "/").rsplit("/", 1)[-1]
    name = name.split(".", 1)[0] if not name.startswith(".") else name
    return str(int(name)) if name.isdigit() else name


@dataclass
class _Entry:
    """One member as the header index saw it."""

    suffix: str
    offset: int  # of its data, from the start of the file
    size: int
    unsafe: bool


def _index_archive(fileobj: BinaryIO, base: int, groups: dict[str, list[list[_Entry]]], last: list[_Entry]) -> int:
    """Add the members of the archive starting at `base` to `groups` (key -> its samples, each a
    list of entries; a member whose suffix the key's samples all have starts a new sample) and
    return where the archive ended. Only headers are read; `last` holds the entry read last."""
    fileobj.seek(base)
    with tarfile.open(fileobj=fileobj, mode="r:") as tar:
        for info in tar:
            if info.isdir():
                continue
            parts = split_key(info.name)
            if parts is None:
                continue  # a file without an extension belongs to no sample (as in webdataset)
            key, suffix = parts
            samples = groups.setdefault(key, [])
            entry = _Entry(suffix, info.offset_data, info.size, unsafe_member(info))
            target = next((s for s in samples if all(e.suffix != suffix for e in s)), None)
            if target is None:
                samples.append(target := [])
            target.append(entry)
            last[:] = [entry]
        return tar.offset


def _next_archive(fileobj: BinaryIO, end: int) -> int | None:
    """Where the next concatenated archive starts after the archive ending at `end`, or None at the
    end of the file. ReadError if no end-of-archive marker (zero block) is at `end` (the file is
    truncated or corrupt) or if non-zero bytes after it are not a tar header (naming them)."""
    try:
        fileobj.seek(end)
    except (OSError, ValueError):
        return None  # a stream that cannot seek back cannot tell; tarfile saw the end
    if fileobj.read(tarfile.BLOCKSIZE) != bytes(tarfile.BLOCKSIZE):
        raise tarfile.ReadError(f"no end-of-archive marker at offset {end}: truncated or corrupt")
    position = end + tarfile.BLOCKSIZE
    while chunk := fileobj.read(_SCAN):
        stripped = chunk.lstrip(b"\0")
        if stripped:
            start = position + len(chunk) - len(stripped)
            start -= (start - end) % tarfile.BLOCKSIZE
            fileobj.seek(start)
            header = fileobj.read(tarfile.BLOCKSIZE)
            try:
                tarfile.TarInfo.frombuf(header, tarfile.ENCODING, "surrogateescape")
            except tarfile.HeaderError:
                fileobj.seek(0, 2)
                raise tarfile.ReadError(f"{fileobj.tell() - start} unread bytes at offset {start}, after the "
                                        f"end-of-archive marker at offset {end}: not a tar header") from None
            return start
        position += len(chunk)
    return None


def iter_tar_samples(fileobj: BinaryIO, max_member_bytes: int) -> Iterator[TarSample | str]:
    """Yield the samples of a seekable tar in the order their first members appear; a final string
    is yielded if the tar is cut short or corrupt.

    Members are grouped by key over the whole file, so a sample whose members are not adjacent
    (GNU tar without `--sort=name` writes a folder in directory order) is still one sample; for
    adjacent members this is webdataset's grouping. The headers are indexed first, then each
    sample's members are read at their offsets. A sample with a member that has an unsafe name
    (absolute, `..`) or is a link or device is one sample whose `problem` is `unsafe_member_path`;
    such members are never read. Python's tarfile ends quietly at a truncated or garbled header,
    so each archive must end with a zero block (the end-of-archive marker); if it does not, or
    bytes after it are neither zeros nor another archive, the sample read last is marked
    `truncated_shard` too (its later members may be lost).
    """
    groups: dict[str, list[list[_Entry]]] = {}
    last: list[_Entry] = []
    error = None
    base: int | None = 0
    try:
        while base is not None:
            base = _next_archive(fileobj, _index_archive(fileobj, base, groups, last))
    except (tarfile.TarError, EOFError, OSError) as err:
        error = f"{type(err).__name__}: {err}"
    first_seen = sorted(((entries[0].offset, key, entries) for key, samples in groups.items()
                         for entries in samples), key=lambda t: t[0])
    for _, key, entries in first_seen:
        sample = TarSample(key=key)
        if error is not None and any(entry is last[0] for entry in entries):
            sample.problem = "truncated_shard"
        for entry in entries:
            if entry.unsafe:  # the sample is quarantined as a whole; this member is never read
                sample.problem = sample.problem or "unsafe_member_path"
                continue
            data = None
            if entry.size <= max_member_bytes:
                try:
                    data = read_member(fileobj, entry.offset, entry.size)
                except EOFError:  # the member the index stopped in: its sample is truncated_shard
                    sample.problem = "truncated_shard"
            sample.members[entry.suffix] = Member(offset=entry.offset, size=entry.size, data=data)
        yield sample
    if error is not None:
        yield error


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
