"""Shards as real tools write them, through the real pipeline: every sample fed is counted once.

One pool holds a case per layout (each beside a good sample): nested folders whose part names
collided, concatenated archives, GNU tar's `./` and folder layouts, dotted keys, integer parquet
keys, samples with bad members, a parquet without a `key` column, `.jpeg` members, 16-bit PNGs,
an extreme aspect ratio, and random layouts from tests/layouts.py. The expected fate of every
sample is written down here, independently of the reader.
"""

from __future__ import annotations

import io
import json
import random
import re
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.core.config import config_from_dict
from pipeline.core.io import InputError, part_name
from pipeline.core.runner import run_pipeline
from tests.checks import assert_accounted
from tests.layouts import image_bytes, random_layout
from tests.test_imaging import png16, scene

_seed = iter(range(10**8, 2 * 10**8))


def members(key: str, ext: str = "jpg", image: bytes | None = None) -> dict[str, bytes]:
    """A usable sample's members: a distinct image, a caption and a json."""
    return {f"{key}.{ext}": image if image is not None else image_bytes(ext, next(_seed)),
            f"{key}.txt": f"a photo of {key}".encode(), f"{key}.json": json.dumps({"key": key}).encode()}


def tar_of(files: dict[str, bytes], names: list[tuple[str, tarfile.TarInfo | None]] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for _, info in names or []:
            tar.addfile(info)
    return buf.getvalue()


def gnu_tar(out: Path, files: dict[str, bytes], work: Path, *args: str) -> None:
    """`tar -cf out ARGS` run by GNU tar in a folder holding `files`."""
    for name, data in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(data)
    subprocess.run(["tar", "-cf", str(out), *args], cwd=work, check=True)


def parquet(path: Path, keys: list, status: list[str], key_type: pa.DataType = pa.string()) -> None:
    pq.write_table(pa.table({"key": pa.array(keys, key_type), "status": status}), path)


def build_pool(root: Path) -> dict[str, str | None]:
    """Write the pool under root/in; return sample_id -> expected quarantine reason."""
    src = root / "in"
    (src / "a").mkdir(parents=True)
    expected: dict[str, str | None] = {}

    # Nested folders: "a/00000" and "a__00000" once shared one part file.
    (src / "a" / "00000.tar").write_bytes(tar_of({**members("k0"), **members("k1")}))
    (src / "a__00000.tar").write_bytes(tar_of({**members("k0"), **members("k1"), **members("k2")}))
    expected |= {f"a/00000/k{i}": None for i in range(2)} | {f"a__00000/k{i}": None for i in range(3)}

    # `cat a.tar b.tar > c.tar`; the parquet lists both halves.
    (src / "cat.tar").write_bytes(tar_of(members("c0")) + tar_of({**members("c1"), **members("c2")}))
    parquet(src / "cat.parquet", ["c0", "c1", "c2"], ["success"] * 3)
    expected |= {f"cat/c{i}": None for i in range(3)}

    # GNU tar: `tar -C dir -cf x.tar .` ("./k.jpg") and a folder ("sub/k.jpg"), both beside a parquet.
    gnu_tar(src / "dot.tar", {**members("d0"), **members("d1")}, root / "w-dot", ".")
    parquet(src / "dot.parquet", ["d0", "d1", "d9"], ["success", "success", "failed_to_download"])
    expected |= {"dot/d0": None, "dot/d1": None, "dot/d9": "failed_to_download"}
    gnu_tar(src / "sub.tar", {f"sub/{k}": v for k, v in {**members("s0"), **members("s1")}.items()}, root / "w-sub", "sub")
    parquet(src / "sub.parquet", ["s0", "s1"], ["success"] * 2)
    expected |= {"sub/sub/s0": None, "sub/sub/s1": None}

    # Dotted keys: webdataset keys "p.q.jpg" as "p"; the parquet's "p.q" matches it.
    (src / "dotted.tar").write_bytes(tar_of({**members("p.q"), **members("r.s", "png")}))
    parquet(src / "dotted.parquet", ["p.q", "r.s"], ["success"] * 2)
    expected |= {"dotted/p": None, "dotted/r": None}

    # Integer parquet keys against img2dataset's zero-padded tar keys.
    (src / "int.tar").write_bytes(tar_of({**members("000000000"), **members("000000001")}))
    parquet(src / "int.parquet", [0, 1, 2], ["success", "success", "failed_to_download"], pa.int64())
    expected |= {"int/000000000": None, "int/000000001": None, "int/2": "failed_to_download"}

    # Bad members: each such sample is one row with one reason.
    link = tarfile.TarInfo("l0.jpg")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    bad = {**members("b0"), "../b1.jpg": b"x", "../b1.txt": b"y", "/b2.jpg": b"z", "l0.txt": b"caption"}
    (src / "bad.tar").write_bytes(tar_of(bad, [("l0.jpg", link)]))
    expected |= {"bad/b0": None, "bad/../b1": "unsafe_member_path", "bad//b2": "unsafe_member_path",
                 "bad/l0": "unsafe_member_path"}

    # A parquet without a `key` column: its failed rows are still samples.
    (src / "nokey.tar").write_bytes(tar_of({**members("n0"), **members("n1")}))
    pq.write_table(pa.table({"status": ["success", "failed_to_download", "success"]}), src / "nokey.parquet")
    expected |= {"nokey/n0": None, "nokey/n1": None, "nokey/row.1": "failed_to_download"}

    # .jpeg members (exported as .jpg); two different 16-bit PNGs (not near-duplicates); 60000x2.
    (src / "jpeg.tar").write_bytes(tar_of({**members("j0", "jpeg"), **members("j1", "JPEG", image_bytes("jpeg", next(_seed)))}))
    expected |= {"jpeg/j0": None, "jpeg/j1": None}
    sixteen = {**members("h0", "png", png16(scene(11).astype(np.uint16) * 257)),
               **members("h1", "png", png16(scene(12).astype(np.uint16) * 257))}
    buf = io.BytesIO()
    Image.fromarray(np.zeros((2, 60000), dtype=np.uint8)).save(buf, "PNG")
    (src / "deep.tar").write_bytes(tar_of({**sixteen, **members("w0", "png", buf.getvalue())}))
    expected |= {"deep/h0": None, "deep/h1": None, "deep/w0": "extreme_aspect"}

    for i in range(4):  # random layouts, seeded
        layout = random_layout(random.Random(i), seed_base=10**7 * (i + 1))
        layout.write(src / "gen", str(i))
        expected |= {sid: reason for sid, (reason, _) in layout.expected_ids(f"gen/{i}").items()}
    return expected


def test_real_tool_layouts_lose_nothing(spark, tmp_path: Path) -> None:
    expected = build_pool(tmp_path)
    cfg = config_from_dict({"input": f"{tmp_path}/in/**/*.tar", "run_dir": str(tmp_path / "run"),
                            "steps": ["exact_dedup", "phash_dedup"], "export": {"samples_per_shard": 7}})
    result = run_pipeline(cfg)
    ledger = assert_accounted(tmp_path / "run", expected)
    assert ledger["removed"] == {"exact_dedup": {}, "phash_dedup": {}}  # the 16-bit pair is not a duplicate
    exported = {r["sample_id"]: r for f in sorted(Path(result.export_dir).glob("*.parquet"))
                for r in pq.read_table(f).to_pylist()}
    assert {exported[f"jpeg/j{i}"]["image_ext"] for i in range(2)} == {"jpg"}
    assert result.manifests["ingest"]["counts"]["parquet_errors"] == {
        "nokey": "no 'key' column: its 3 rows cannot be matched to the tar's samples"}
    assert result.manifests["ingest"]["counts"]["tar_errors"] == {}


def test_part_names_are_flat_and_reversible() -> None:
    names = ["a/00000", "a__00000", "a~2f00000", "x y/\u00fc:1", "00000"]
    parts = [part_name(n) for n in names]
    assert parts[:2] == ["a~2f00000", "a__00000"]
    assert all(re.fullmatch(r"[A-Za-z0-9._~-]+", p) for p in parts)
    unescape = [re.sub(rb"~([0-9a-f]{2})", lambda m: bytes([int(m[1], 16)]), p.encode()).decode() for p in parts]
    assert unescape == names


def test_part_names_that_still_collide_stop_the_run_before_ingest(spark, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for name in ("Shard", "shard"):  # one file on a case-insensitive file system
        (tmp_path / "in" / f"{name}.tar").write_bytes(tar_of(members(name)))
    cfg = config_from_dict({"input": str(tmp_path / "in"), "run_dir": str(tmp_path / "run")})
    with pytest.raises(InputError, match=r"would share the part name 'shard'; rename one"):
        run_pipeline(cfg)
    assert not (tmp_path / "run").exists()  # refused before anything is written
