"""Eval sets read as img2dataset shards or as an image folder give the same hashes and ids."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.config import IngestConfig
from pipeline.dedup.eval_sets import embed_images, eval_set_files, image_bytes, read_eval_set
from pipeline.models import ModelSpec


@pytest.fixture(scope="module")
def eval_folder(demo_dir: Path, tmp_path_factory) -> Path:
    """The demo eval images as files (in nested folders), plus a broken one and a non-image."""
    shards, _ = read_eval_set(str(demo_dir / "eval"), IngestConfig())
    folder = tmp_path_factory.mktemp("eval-images")
    for i, (im, data) in enumerate(zip(shards, image_bytes(shards))):
        key = im.eval_id.rsplit("/", 1)[1]
        ext = Image.open(io.BytesIO(data)).format.lower().replace("jpeg", "jpg")
        path = folder / f"part{i % 2}" / f"{key}.{ext}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_folder_and_shards_give_the_same_images(demo_dir: Path, eval_folder: Path) -> None:
    spec = str(demo_dir / "eval")
    shards, bad = read_eval_set(spec, IngestConfig())
    assert len(shards) == 60 and bad == 0
    assert shards[0].eval_id == f"eval:{spec}/00000/{shards[0].eval_id.rsplit('/', 1)[1]}"
    files, bad_files = read_eval_set(str(eval_folder), IngestConfig())
    assert len(files) == 60 and bad_files == 1  # broken.jpg; notes.txt is not an image
    assert all(im.eval_id.startswith(f"eval:{eval_folder}/part") for im in files)
    by_uid = {im.uid: im for im in shards}
    for im, data in zip(files, image_bytes(files)):
        assert hashlib.sha256(data).hexdigest() == im.uid
        assert by_uid[im.uid].phash == im.phash
    assert len(eval_set_files(str(eval_folder))) == 61 and eval_set_files(spec) == [f"{spec}/00000.tar"]


def test_eval_embeddings_are_unit_and_batch_independent(demo_dir: Path, tiny_checkpoint: Path) -> None:
    shards, _ = read_eval_set(str(demo_dir / "eval"), IngestConfig())
    spec = ModelSpec(arch="curate-tiny", pretrained=str(tiny_checkpoint))
    emb = embed_images(shards[:10], spec, batch_size=4)
    again = embed_images(shards[:10], spec, batch_size=10)
    assert emb.shape[0] == 10 and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.max(np.abs(emb - again)) < 1e-5  # batching does not change an image's embedding
