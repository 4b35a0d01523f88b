"""Builds img2dataset-style shards with injected defects, and records what ingest must make of them.

Every sample a shard holds (or its parquet lists) is recorded in `Pool.expected` as sample_id ->
quarantine reason (None: usable, so it must reach the output). Usable images are distinct seeded
noise images with three-word captions, so no filter or dedup removes them.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.core.tars import split_key

PARQUET = pa.schema([("key", pa.string()), ("status", pa.string()), ("caption", pa.string()),
                     ("url", pa.string()), ("error_message", pa.string())])


def noise_image(seed: int, fmt: str = "JPEG", size: int = 48) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height RGB, with almost no pixel data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int, seed: int) -> bytes:
    """A real small JPEG whose SOF0 header is patched to declare width x height."""
    data = bytearray(noise_image(seed))
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _info(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size, info.mtime = kind, link, len(data) if kind == tarfile.REGTYPE else 0, 0
    return info, data


@dataclass
class Shard:
    """One shard being built: tar members in order, and its img2dataset parquet rows."""

    pool: Pool
    name: str
    members: list[tuple[tarfile.TarInfo, bytes]] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    def sample(self, key: str, image: bytes | None, *, ext: str = "jpg", caption: bytes | None = None,
               reason: str | None = None, in_parquet: bool = True, sample_id: str | None = None) -> None:
        """Members `{key}.{ext}` (unless image is None), `.json`, `.txt`, as webdataset orders them."""
        text = caption if caption is not None else f"a photo of {self.name} {key}".encode()
        meta = {"key": key, "url": f"https://example.invalid/{self.name}/{key}", "status": "success"}
        named = [(ext, image), ("json", json.dumps(meta).encode()), ("txt", text)]
        for member_ext, data in sorted((e, d) for e, d in named if d is not None):
            self.members.append(_info(f"{key}.{member_ext}", data))
        if in_parquet:
            self.rows.append({**meta, "caption": text.decode("utf-8", "replace"), "error_message": None})
        self.pool.expect(sample_id or f"{self.name}/{key}", reason, image)

    def good(self, key: str, fmt: str = "JPEG") -> None:
        ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[fmt]
        self.sample(key, noise_image(self.pool.next_seed(), fmt), ext=ext)

    def raw(self, info: tarfile.TarInfo, data: bytes, reason: str) -> None:
        """A member added as it is (unsafe names, links); expected as one quarantined row, keyed as
        webdataset keys the member."""
        self.members.append((info, data))
        self.pool.expect(f"{self.name}/{split_key(info.name)[0]}", reason, None)

    def listed_only(self, key: str, reason: str, status: str = "success") -> None:
        """A parquet row with no sample in the tar."""
        self.rows.append({"key": key, "status": status, "caption": "listed only", "url": None,
                          "error_message": None if status == "success" else "HTTP Error 404"})
        self.pool.expect(f"{self.name}/{key}", reason, None)

    def tar_bytes(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for info, data in self.members:
                tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
        return buf.getvalue()

    def write(self, tar: bytes | None = None, parquet: bool | bytes = True, stats: bool = True) -> Path:
        """Write `<name>.tar` (these members, or the given bytes), `.parquet` (these rows, the given
        bytes, or none) and `_stats.json`; return the tar's path."""
        path = self.pool.shards / f"{self.name}.tar"
        path.write_bytes(self.tar_bytes() if tar is None else tar)
        if isinstance(parquet, bytes):
            path.with_suffix(".parquet").write_bytes(parquet)
        elif parquet:
            pq.write_table(pa.Table.from_pylist(self.rows, schema=PARQUET), path.with_suffix(".parquet"))
        if stats:
            ok = sum(r["status"] == "success" for r in self.rows)
            (self.pool.shards / f"{self.name}_stats.json").write_text(
                json.dumps({"count": len(self.rows), "successes": ok, "failed_to_download": len(self.rows) - ok}))
        return path


@dataclass
class Pool:
    """A folder of shards and the fate expected for every row in it."""

    shards: Path
    expected: dict[str, str | None] = field(default_factory=dict)
    uids: dict[str, str] = field(default_factory=dict)  # usable sample_id -> sha256 of its image
    seed: int = 0

    def next_seed(self) -> int:
        self.seed += 1
        return self.seed

    def shard(self, name: str) -> Shard:
        self.shards.mkdir(parents=True, exist_ok=True)
        return Shard(self, name)

    def expect(self, sample_id: str, reason: str | None, image: bytes | None) -> None:
        assert sample_id not in self.expected, sample_id
        self.expected[sample_id] = reason
        if reason is None:
            self.uids[sample_id] = hashlib.sha256(image).hexdigest()

    def of_shard(self, name: str) -> dict[str, str | None]:
        return {sid: r for sid, r in self.expected.items() if sid.split("/", 1)[0] == name}
