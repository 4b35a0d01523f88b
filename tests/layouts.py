"""Random but valid shard layouts, as tar writers and re-packers make them, with what ingest must read.

A layout is drawn from a `random.Random` (hypothesis' `st.randoms()` in property tests, a seeded one
in pipeline tests): keys with dots, folders and a `./` prefix, members in random order within a
sample (sometimes across samples), random missing `.txt`/`.json` sidecars (and images), parquet rows for some samples plus
failed downloads and rows lost from the tar, keys stored as strings or integers, and the samples
split over several archives concatenated into one file. `Layout.expected` is counted from the
generator's own choices, independently of the reader: sample_id -> (reason, sha256 of the image).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
_KEY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-"


@lru_cache(maxsize=None)
def image_bytes(ext: str, seed: int) -> bytes:
    """A small distinct image in the format of `ext` (noise, so every seed hashes differently)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, FORMATS[ext])
    return buf.getvalue()


@dataclass
class Layout:
    """One shard: its tar bytes, its parquet table (or None) and the fate of every sample in it."""

    tar: bytes
    parquet: pa.Table | None
    expected: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # id -> (reason, sha256)

    def write(self, folder: Path, name: str) -> Path:
        """Write `<name>.tar` (and `.parquet`) under `folder`; return the tar's path."""
        path = folder / f"{name}.tar"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.tar)
        if self.parquet is not None:
            pq.write_table(self.parquet, path.with_suffix(".parquet"))
        return path

    def expected_ids(self, shard_name: str) -> dict[str, tuple[str | None, str | None]]:
        return {f"{shard_name}/{sid}": fate for sid, fate in self.expected.items()}


def _key(rng: random.Random, numeric: bool, used: set[str]) -> tuple[str, str, str]:
    """(key as the tar's member names spell it, key as the parquet lists it, the key ingest matches
    them on); unique within the shard after ingest's matching."""
    while True:
        if numeric:
            n = rng.randrange(10**6)
            written, listed, match = f"{n:09d}", str(n), str(n)
        else:
            base = rng.choice(_KEY_CHARS[:36]) + "".join(rng.choice(_KEY_CHARS) for _ in range(rng.randint(0, 7)))
            match = str(int(base)) if base.isdigit() else base
            written = listed = base
            if rng.random() < 0.3:  # a dotted key: webdataset keys it up to the first dot
                written = listed = f"{base}.{''.join(rng.choice(_KEY_CHARS) for _ in range(rng.randint(1, 4)))}"
        if match not in used:
            used.add(match)
            return written, listed, match


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def random_layout(rng: random.Random, seed_base: int = 0) -> Layout:
    """A random valid shard (see the module docstring); images are distinct within the shard."""
    numeric = rng.random() < 0.25
    prefix = rng.choice(["", "", "./", "sub/", "./a/b/"])
    used: set[str] = set()
    expected: dict[str, tuple[str | None, str | None]] = {}
    samples, rows = [], []
    for i in range(rng.randint(0, 7)):
        key, listed, _ = _key(rng, numeric, used)
        ext = rng.choice(list(FORMATS))
        members = []
        image = None
        if rng.random() < 0.9:
            image = image_bytes(ext, seed_base + 7919 * i + rng.randrange(10**6))
            members.append((f"{prefix}{key}.{ext}", image))
        if rng.random() < 0.8:
            members.append((f"{prefix}{key}.txt", f"a photo of {key}".encode()))
        if rng.random() < 0.8:
            members.append((f"{prefix}{key}.json", json.dumps({"key": listed, "url": f"http://x.invalid/{key}"}).encode()))
        rng.shuffle(members)
        if not members:
            continue
        samples.append(members)
        sample_id = prefix.removeprefix("./") + key.split(".")[0]
        expected[sample_id] = (None, hashlib.sha256(image).hexdigest()) if image is not None else ("no_image", None)
        if rng.random() < 0.8:
            rows.append({"key": listed, "status": "success", "caption": f"a photo of {key}"})
    for status in rng.choices(["failed_to_download", "success"], k=rng.randint(0, 3)):
        _, listed, _ = _key(rng, numeric, used)
        rows.append({"key": listed, "status": status, "caption": None})
        expected[listed] = ("missing_from_tar" if status == "success" else status, None)
    cuts = sorted(rng.sample(range(1, len(samples)), min(rng.randint(0, 2), max(0, len(samples) - 1))))
    bounds = [0, *cuts, len(samples)]
    archives = [[m for s in samples[a:b] for m in s] for a, b in zip(bounds, bounds[1:])]
    if rng.random() < 0.2:  # samples interleaved, as GNU tar writes a folder without --sort=name
        for members in archives:
            rng.shuffle(members)
    tar = b"".join(_tar(members) for members in archives)
    parquet = None
    if rows or rng.random() < 0.5:
        key_type = pa.int64() if numeric else pa.string()
        keys = [int(r["key"]) if numeric else r["key"] for r in rows]
        parquet = pa.table({"key": pa.array(keys, key_type), "status": [r["status"] for r in rows],
                            "caption": [r["caption"] for r in rows]})
    return Layout(tar, parquet, expected)
