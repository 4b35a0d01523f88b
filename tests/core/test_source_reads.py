"""Reading images back from source tars: order kept, neighbours merged, sha256 checked, local and S3."""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
from pathlib import Path

import pytest

from pipeline.core import io as pio
from pipeline.core.source_reads import ImageRefs, iter_images, plan_reads
from pipeline.core.tars import SourceChanged


def write_tar(path: Path, n: int, seed: int) -> list[tuple[int, bytes]]:
    """A tar of n random-size members; (data offset, bytes) of each."""
    rng = random.Random(seed)
    blobs = [rng.randbytes(rng.randrange(1, 5000)) for _ in range(n)]
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for i, blob in enumerate(blobs):
            info = tarfile.TarInfo(f"{i:05d}.jpg")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    with tarfile.open(path) as tar:
        return [(m.offset_data, blob) for m, blob in zip(tar.getmembers(), blobs, strict=True)]


def refs_of(items: list[tuple[str, int, bytes]]) -> ImageRefs:
    return ImageRefs([p for p, _, _ in items], [o for _, o, _ in items], [len(b) for _, _, b in items],
                     [hashlib.sha256(b).hexdigest() for _, _, b in items], [f"s/{i}" for i in range(len(items))])


@pytest.fixture
def two_tars(tmp_path: Path) -> list[tuple[str, int, bytes]]:
    items = [(str(tmp_path / f"{t}.tar"), o, b) for t in range(2) for o, b in write_tar(tmp_path / f"{t}.tar", 40, t)]
    random.Random(0).shuffle(items)
    return items


def test_images_come_back_in_the_order_asked_whatever_the_block_size(two_tars) -> None:
    refs = refs_of(two_tars)
    for block in (1, 3000, 50_000, 1 << 30):
        assert list(iter_images(refs, block_bytes=block)) == [b for _, _, b in two_tars]


def test_reads_are_grouped_by_tar_and_merged_with_neighbours(two_tars) -> None:
    paths, starts, stops = plan_reads(refs_of(two_tars), range(len(two_tars)))
    assert len(paths) == 2 and sorted(paths) == paths  # one forward read per tar
    assert all(start <= o and o + len(b) <= stops[paths.index(p)]
               for p, o, b in two_tars for start in [starts[paths.index(p)]])


def test_changed_short_or_missing_sources_are_reported(tmp_path: Path, two_tars) -> None:
    path, offset, blob = sorted(two_tars)[0]
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    with pytest.raises(SourceChanged, match="changed since ingest"):
        list(iter_images(refs_of(two_tars)))
    Path(path).write_bytes(bytes(data[: offset + 1]))
    with pytest.raises(SourceChanged, match="shorter than at ingest"):
        list(iter_images(refs_of(two_tars)))
    Path(path).unlink()
    with pytest.raises(SourceChanged, match="gone since ingest"):
        list(iter_images(refs_of(two_tars)))


def test_object_storage_reads_byte_ranges(tmp_path: Path, monkeypatch) -> None:
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server._server.server_address[:2]
        for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                           "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(key, value)
        pio.use_storage({"s3": {"endpoint_url": f"http://{host}:{port}", "skip_instance_cache": True}})
        local = write_tar(tmp_path / "a.tar", 30, 5)
        fs, _ = pio.filesystem("s3://pool")
        fs.mkdir("pool")
        fs.put(str(tmp_path / "a.tar"), "pool/shards/a.tar")
        items = [("s3://pool/shards/a.tar", o, b) for o, b in local][::-1]
        assert list(iter_images(refs_of(items), block_bytes=20_000)) == [b for _, _, b in items]
    finally:
        pio.use_storage({})
        server.stop()
