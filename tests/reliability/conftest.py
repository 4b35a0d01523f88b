"""One pool of broken shards (each defect beside good samples) and one real pipeline run over it."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from pipeline.core.config import config_from_dict
from pipeline.core.runner import RunResult, run_pipeline
from tests.reliability.pool import Pool, jpeg_declaring, noise_image, png_declaring

MAX_IMAGE_BYTES = 200_000


def _member(raw: bytes, name: str) -> tarfile.TarInfo:
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return tar.getmember(name)


def build_bad_pool(root: Path) -> Pool:
    """Shards named after their defect; see the tests in test_bad_input.py for what each must give."""
    pool = Pool(root / "shards")

    s = pool.shard("good")
    for i, fmt in enumerate(("JPEG", "PNG", "WEBP")):
        s.good(f"g{i}", fmt)
    s.write()

    s = pool.shard("truncated_mid")  # cut inside t3's image: t3 and the rows after it are lost
    for i in range(3):
        s.good(f"t{i}")
    for i in range(3, 6):
        s.sample(f"t{i}", noise_image(pool.next_seed(), size=160), reason="truncated_shard")
    raw = s.tar_bytes()
    t3 = _member(raw, "t3.jpg")
    s.write(tar=raw[: t3.offset_data + t3.size // 2])

    s = pool.shard("truncated_end")  # cut between samples: tarfile alone would not notice
    s.good("u0")
    for i in range(1, 4):  # u1 is the last one read, its later members may be lost with the rest
        s.sample(f"u{i}", noise_image(pool.next_seed()), reason="truncated_shard")
    raw = s.tar_bytes()
    s.write(tar=raw[: _member(raw, "u2.jpg").offset])

    s = pool.shard("unsafe")
    s.good("a0")
    s.raw(tarfile.TarInfo("../../x.jpg"), b"", "unsafe_member_path")
    s.raw(tarfile.TarInfo("/etc/x.jpg"), b"", "unsafe_member_path")
    for name, kind, target in (("evil.jpg", tarfile.SYMTYPE, "/etc/passwd"), ("hard.jpg", tarfile.LNKTYPE, "a0.jpg")):
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, target
        s.raw(info, b"", "unsafe_member_path")
    s.good("a1")
    s.write()

    s = pool.shard("images")
    s.good("i0")
    for i, ext in enumerate(("jpg", "png", "webp"), start=1):
        s.sample(f"i{i}", b"", ext=ext, reason="empty_image")
    jpeg = noise_image(pool.next_seed(), size=160)
    broken = {
        "i4": ("jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 8),  # JPEG magic, garbage
        "i5": ("jpg", jpeg[: len(jpeg) // 2]),  # truncated JPEG
        "i6": ("png", b"\x89PNG\r\n\x1a\n" + bytes(range(255, -1, -1)) * 4),
        "i7": ("webp", b"RIFF\x00\x10\x00\x00WEBPVP8 " + bytes(range(256)) * 4),
        "i8": ("jpg", noise_image(pool.next_seed(), "GIF")),  # not a JPEG/PNG/WebP decoder's format
    }
    for key, (ext, data) in broken.items():
        s.sample(key, data, ext=ext, reason="decode_error")
    s.good("i9", "PNG")
    s.write()

    s = pool.shard("bomb")
    s.good("b0")
    s.sample("b1", png_declaring(100_000, 100_000), ext="png", reason="too_many_pixels")
    s.sample("b2", jpeg_declaring(65_000, 65_000, pool.next_seed()), reason="too_many_pixels")
    s.sample("b3", noise_image(pool.next_seed(), "PNG", size=300), ext="png", reason="image_too_large")
    s.write()

    s = pool.shard("captions")
    s.good("c0")
    s.sample("c1", noise_image(pool.next_seed()), caption=b"caf\xe9 au lait \xff", reason="caption_not_utf8")
    s.sample("c2", noise_image(pool.next_seed()), caption=b"word " * 200_000, reason="caption_too_long")
    s.write()

    s = pool.shard("mismatch")  # the parquet lists rows the tar lacks, and lacks one it has
    s.good("m0")
    s.good("m1")
    s.sample("m2", noise_image(pool.next_seed()), in_parquet=False)
    s.listed_only("m8", "failed_to_download", status="failed_to_download")
    s.listed_only("m9", "missing_from_tar")
    s.write()

    s = pool.shard("garbage_parquet")
    s.good("p0")
    s.good("p1")
    s.write(parquet=b"PAR1" + bytes(range(256)) * 4 + b"PAR1")

    s = pool.shard("no_parquet")
    s.good("n0")
    s.good("n1")
    s.write(parquet=False, stats=False)

    s = pool.shard("no_stats")
    s.good("s0")
    s.good("s1")
    s.write(stats=False)

    s = pool.shard("dup_keys")
    s.good("d0")
    s.good("d1")
    s.sample("d0", noise_image(pool.next_seed()), in_parquet=False, reason="duplicate_key", sample_id="dup_keys/d0#2")
    s.write()

    pool.shard("empty").write()
    return pool


def bad_pool_config(pool: Pool, run_dir: Path, **extra) -> dict:
    return {
        "input": str(pool.shards),
        "run_dir": str(run_dir),
        "basic_filter": {"min_side": 16},
        "ingest": {"max_image_bytes": MAX_IMAGE_BYTES},
        "export": {"samples_per_shard": 10},
        **extra,
    }


@pytest.fixture(scope="session")
def bad_pool(tmp_path_factory) -> Pool:
    return build_bad_pool(tmp_path_factory.mktemp("bad-pool"))


@pytest.fixture(scope="session")
def bad_run(spark, bad_pool: Pool, tmp_path_factory) -> RunResult:
    """The whole pipeline over the broken pool, once."""
    return run_pipeline(config_from_dict(bad_pool_config(bad_pool, tmp_path_factory.mktemp("bad-run"))))
