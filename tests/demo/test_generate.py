"""The demo generator writes real img2dataset-format shards with the defects its ground truth claims."""

from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.demo import make_demo_data
from pipeline.demo.generate import META_SCHEMA, RATES, compute_key
from pipeline.demo.render import BACKGROUNDS, COLOURS, SHAPES, concept_grid

IMAGE_EXTS = ("jpg", "png", "webp")
N_SAMPLES, N_EVAL = 600, 60


def _sha256_tree(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _rows(parquet: Path) -> list[dict]:
    return pq.read_table(parquet).to_pylist()


def _read_tar(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]


def _decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
        return True
    except Exception:  # noqa: BLE001 - any decoder error means "not an image"
        return False


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo")
    return out, make_demo_data(out, n_samples=N_SAMPLES, n_eval=N_EVAL, seed=0)


@pytest.fixture(scope="module")
def truth(demo: tuple[Path, dict]) -> list[dict]:
    return pq.read_table(demo[0] / "ground_truth.parquet").to_pylist()


@pytest.fixture(scope="module")
def images(demo: tuple[Path, dict]) -> dict[tuple[str, str], tuple[str, bytes]]:
    """(shard, key) -> (extension, image bytes) for every image in the pool and the eval set."""
    found = {}
    for tar_path in sorted(demo[0].glob("*/*.tar")):
        shard = tar_path.stem if tar_path.parent.name == "shards" else f"eval/{tar_path.stem}"
        for info, data in _read_tar(tar_path):
            key, ext = info.name.split(".")
            if ext in IMAGE_EXTS:
                found[(shard, key)] = (ext, data)
    return found


def test_layout_and_summary(demo: tuple[Path, dict]) -> None:
    out, summary = demo
    shards = [f"shards/0000{i}{suffix}" for i in range(6) for suffix in (".parquet", ".tar", "_stats.json")]
    evals = ["eval/00000.parquet", "eval/00000.tar", "eval/00000_stats.json"]
    assert sorted(_sha256_tree(out)) == sorted(["README.txt", "ground_truth.parquet", "eval_ground_truth.parquet",
                                                *shards, *evals])
    assert summary["n_shards"] == 6 and summary["ground_truth"] == str(out / "ground_truth.parquet")
    assert sum(summary["kinds"].values()) == N_SAMPLES


def test_same_seed_is_byte_identical_and_other_seed_differs(demo: tuple[Path, dict], tmp_path: Path) -> None:
    make_demo_data(tmp_path / "again", n_samples=N_SAMPLES, n_eval=N_EVAL, seed=0)
    make_demo_data(tmp_path / "other", n_samples=N_SAMPLES, n_eval=N_EVAL, seed=1)
    first = _sha256_tree(demo[0])
    assert _sha256_tree(tmp_path / "again") == first
    other = _sha256_tree(tmp_path / "other")
    assert other.keys() == first.keys()
    assert all(other[name] != first[name] for name in first if name != "README.txt")


def test_keys_match_img2dataset() -> None:
    downloader = pytest.importorskip("img2dataset.downloader")
    for index, shard_id, per_shard in [(0, 0, 100), (99, 5, 100), (7, 12, 10_000), (149, 3, 150), (0, 2, 1)]:
        oom = math.ceil(math.log10(per_shard))  # as img2dataset's Downloader computes it
        assert compute_key(index, shard_id, per_shard) == downloader.compute_key(index, shard_id, oom, 5)


def test_tar_members_follow_webdataset_writer(demo: tuple[Path, dict]) -> None:
    for tar_path in sorted(demo[0].glob("*/*.tar")):
        members = _read_tar(tar_path)
        names = [info.name for info, _ in members]
        assert len(names) == len(set(names))
        by_key: dict[str, list[str]] = {}
        for info, _ in members:
            assert (info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname) == (0, 0o644, 0, 0, "", "")
            key, ext = info.name.split(".")
            by_key.setdefault(key, []).append(ext)
        assert list(by_key) == sorted(by_key)
        for exts in by_key.values():
            assert exts == sorted(exts) and len(exts) == 3
            assert {"json", "txt"} < set(exts) and len(set(exts) & set(IMAGE_EXTS)) == 1


def test_parquet_rows_match_tar_members(demo: tuple[Path, dict]) -> None:
    for tar_path in sorted(demo[0].glob("*/*.tar")):
        rows = pq.read_table(tar_path.with_suffix(".parquet")).to_pylist()
        assert pq.read_schema(tar_path.with_suffix(".parquet")).remove_metadata() == META_SCHEMA
        files = {info.name: data for info, data in _read_tar(tar_path)}
        ok = [r for r in rows if r["status"] == "success"]
        failed = [r for r in rows if r["status"] != "success"]
        assert len(ok) + len(failed) == len(rows) and {r["status"] for r in failed} <= {"failed_to_download"}
        assert len(files) == 3 * len(ok)
        for row in failed:
            assert row["error_message"] and row["width"] is None and row["sha256"] is None
            assert not any(name.startswith(row["key"] + ".") for name in files)
        for row in ok:
            assert json.loads(files[f"{row['key']}.json"]) == row
            assert files[f"{row['key']}.txt"].decode() == row["caption"]
            image = next(files[name] for name in (f"{row['key']}.{e}" for e in IMAGE_EXTS) if name in files)
            assert hashlib.sha256(image).hexdigest() == row["sha256"]
        stats = json.loads(tar_path.with_name(f"{tar_path.stem}_stats.json").read_text())
        assert (stats["count"], stats["successes"], stats["failed_to_download"]) == (len(rows), len(ok), len(failed))
        assert stats["failed_to_resize"] == 0 and stats["duration"] == stats["end_time"] - stats["start_time"]
        assert sum(stats["status_dict"].values()) == len(rows) and stats["status_dict"].get("success", 0) == len(ok)


def test_webdataset_reads_every_sample(demo: tuple[Path, dict]) -> None:
    wds = pytest.importorskip("webdataset")
    tars = sorted(str(p) for p in (demo[0] / "shards").glob("*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False))
    rows = [r for t in tars for r in _rows(Path(t).with_suffix(".parquet")) if r["status"] == "success"]
    assert [s["__key__"] for s in samples] == [r["key"] for r in rows]
    for sample, row in zip(samples, rows):
        payload = {k for k in sample if not k.startswith("__")}
        assert len(payload & set(IMAGE_EXTS)) == 1 and payload - set(IMAGE_EXTS) == {"json", "txt"}
        assert json.loads(sample["json"]) == row and sample["txt"].decode() == row["caption"]


def test_ground_truth_rows_and_rates(demo: tuple[Path, dict], truth: list[dict]) -> None:
    rows = [(r["shard"], r["key"]) for r in truth]
    status = {(p.stem, r["key"]): r["status"] for p in sorted((demo[0] / "shards").glob("*.parquet")) for r in _rows(p)}
    assert rows == list(status)
    counts = Counter(r["kind"] for r in truth)
    assert counts == Counter(demo[1]["kinds"])
    for kind, rate in RATES.items():
        assert abs(counts[kind] / N_SAMPLES - rate) <= 0.005, kind
    for r in truth:
        assert (status[(r["shard"], r["key"])] == "failed_to_download") == (r["kind"] == "failed_to_download")


def test_copies_point_at_their_sources(truth: list[dict], images: dict) -> None:
    by_address = {(r["shard"], r["key"]): r for r in truth}
    eval_concepts = {}
    for r in truth:
        address = (r["shard"], r["key"])
        if r["kind"] in ("exact_duplicate", "near_duplicate"):
            source = by_address[(r["source_shard"], r["source_key"])]
            assert source["kind"] == "clean" and source["concept"] == r["concept"]
            assert (source["shard"], source["key"]) < address
            same_bytes = images[address][1] == images[(source["shard"], source["key"])][1]
            assert same_bytes == (r["kind"] == "exact_duplicate")
            assert _decodes(images[address][1])
        elif r["kind"] == "eval_copy":
            assert r["source_shard"] == "eval/00000" and (r["source_shard"], r["source_key"]) in images
            assert _decodes(images[address][1])
            eval_concepts[r["source_key"]] = r["concept"]
        else:
            assert r["source_shard"] is None and r["source_key"] is None
    assert len(eval_concepts) == Counter(r["kind"] for r in truth)["eval_copy"]


def test_defects_are_what_ground_truth_says(truth: list[dict], images: dict) -> None:
    zero_byte = 0
    for r in truth:
        kind, caption = r["kind"], r["caption"]
        if kind == "failed_to_download":
            assert (r["shard"], r["key"]) not in images and r["concept"] is None
            continue
        ext, data = images[(r["shard"], r["key"])]
        if kind in ("corrupt", "truncated"):
            assert not _decodes(data)
            zero_byte += data == b""
            assert (r["concept"] is None) == (kind == "corrupt") and (kind != "truncated" or ext == "jpg")
            continue
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            assert {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[img.format] == ext
            width, height = img.size
        if kind == "tiny":
            assert min(width, height) < 16
        elif kind == "extreme_aspect":
            assert max(width, height) / min(width, height) >= 5
        else:
            assert min(width, height) >= 16 and max(width, height) / min(width, height) < 2.5
        if kind == "short_caption":
            assert len(caption.split()) == 1 or len(caption) < 5
        else:
            assert len(caption.split()) >= 3
    assert zero_byte == 1


def test_content_mix(truth: list[dict], images: dict) -> None:
    pool = [ext for (shard, _), (ext, _) in images.items() if not shard.startswith("eval/")]
    formats = Counter(pool)
    for ext, share in {"jpg": 0.60, "png": 0.25, "webp": 0.15}.items():
        assert abs(formats[ext] / len(pool) - share) < 0.06, ext
    concepts = Counter(r["concept"] for r in truth if r["concept"])
    assert len(concepts) >= 40
    top, *_, last = [n for _, n in concepts.most_common()]
    assert top >= 10 * last


def test_eval_set_is_clean(demo: tuple[Path, dict], images: dict) -> None:
    rows = pq.read_table(demo[0] / "eval" / "00000.parquet").to_pylist()
    assert len(rows) == N_EVAL and all(r["status"] == "success" for r in rows)
    assert [r["key"] for r in rows] == [compute_key(i, 0, N_EVAL) for i in range(N_EVAL)]
    assert all(_decodes(images[("eval/00000", r["key"])][1]) for r in rows)


def test_rejects_an_eval_set_smaller_than_its_copies(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_eval"):
        make_demo_data(tmp_path, n_samples=600, n_eval=5)


def test_eval_ground_truth_names_each_eval_images_concept(demo: tuple[Path, dict]) -> None:
    rows = pq.read_table(demo[0] / "eval_ground_truth.parquet").to_pylist()
    captions = [r["caption"] for r in pq.read_table(demo[0] / "eval" / "00000.parquet").to_pylist()]
    assert [r["key"] for r in rows] == [compute_key(i, 0, N_EVAL) for i in range(N_EVAL)]
    assert [r["caption"] for r in rows] == captions and all(r["kind"] == "clean" and r["concept"] for r in rows)


def test_concept_grid_low_information_and_eval_per_concept(tmp_path: Path) -> None:
    grid = concept_grid()
    assert len(grid) == len({c.label for c in grid}) == len(SHAPES) * len(COLOURS) * len(BACKGROUNDS)
    rates = {"low_information": 0.2, "mismatched_caption": 0.1, "eval_copy": 0.05}
    summary = make_demo_data(tmp_path, n_samples=200, samples_per_shard=100, seed=3, catalog=grid, rates=rates,
                             zipf_exponent=1.0, eval_per_concept=1)
    assert summary["kinds"] == {"clean": 130, "low_information": 40, "mismatched_caption": 20, "eval_copy": 10}
    eval_rows = pq.read_table(tmp_path / "eval_ground_truth.parquet").to_pylist()
    assert [r["concept"] for r in eval_rows] == [c.label for c in grid]
    truth = pq.read_table(tmp_path / "ground_truth.parquet").to_pylist()
    images = {info.name.split(".")[0]: data for t in sorted((tmp_path / "shards").glob("*.tar"))
              for info, data in _read_tar(t) if info.name.split(".")[1] in IMAGE_EXTS}

    by_label = {c.label: c for c in grid}

    def object_share(r: dict) -> float:  # share of pixels in the concept's object colour
        with Image.open(io.BytesIO(images[r["key"]])) as img:
            pixels = np.asarray(img.convert("RGB"), dtype=np.int16)
        target = np.array(COLOURS[by_label[r["concept"]].colour])
        return float((np.abs(pixels - target).max(axis=-1) <= 30).mean())

    # the object is missing from a low-information image, not from a clean one
    low = [object_share(r) for r in truth if r["kind"] == "low_information"]
    clean = [object_share(r) for r in truth if r["kind"] == "clean"]
    assert np.median(low) < 0.02 < 0.1 < np.median(clean)
    with pytest.raises(ValueError, match="unknown defect kinds"):
        make_demo_data(tmp_path / "bad", n_samples=100, rates={"blurry": 0.1})
