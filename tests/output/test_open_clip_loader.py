"""open_clip's own training data loader reads the output as it is, from the command line a training
job would use (`--train-data '<export>/{00000..N}.tar' --train-num-samples K --dataset-type auto`)."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
import webdataset as wds
from open_clip_train.data import get_data, get_dataset_size
from open_clip_train.params import parse_args
from PIL import Image

from pipeline.models import ModelSpec, load_clip
from tests.output.conftest import FullRun

BATCH = 32


@pytest.fixture(scope="module")
def clip(tiny_checkpoint):
    return load_clip(ModelSpec(arch="curate-tiny", pretrained=str(tiny_checkpoint)))


def pattern(run: FullRun) -> str:
    return str(run.export_dir / json.loads((run.export_dir / "manifest.json").read_text())["pattern"])


def training_args(argv: list[str]):
    args = parse_args([*argv, "--batch-size", str(BATCH), "--workers", "0", "--dataset-type", "auto", "--seed", "0"])
    args.world_size, args.distributed = 1, False  # open_clip's main() sets these from the launcher
    return args


def test_output_has_all_three_image_formats(full_run: FullRun) -> None:
    exts = {next(k for k in ("jpg", "png", "webp") if k in s) for s in wds.WebDataset(pattern(full_run), shardshuffle=False)}
    assert exts == {"jpg", "png", "webp"}


def test_training_split_runs_one_epoch_of_full_batches(full_run: FullRun, clip) -> None:
    kept = full_run.ledger["kept"]
    args = training_args(["--train-data", pattern(full_run), "--train-num-samples", str(kept)])
    loader = get_data(args, (clip.preprocess, clip.preprocess), epoch=0, tokenizer=clip.tokenizer)["train"].dataloader
    seen = 0
    for images, texts in loader:
        assert images.shape[0] == texts.shape[0] == BATCH
        assert images.shape[1:] == (3, *clip.preprocess_cfg["size"]) and images.dtype == torch.float32
        seen += images.shape[0]
    assert seen == loader.num_samples == math.ceil(kept / BATCH) * BATCH


def test_sample_count_comes_from_sizes_json_without_train_num_samples(full_run: FullRun, clip) -> None:
    kept = full_run.ledger["kept"]
    n_shards = len(full_run.manifests["export"]["counts"]["shards"])
    assert get_dataset_size(pattern(full_run)) == (kept, n_shards)
    args = training_args(["--train-data", pattern(full_run)])
    loader = get_data(args, (clip.preprocess, clip.preprocess), tokenizer=clip.tokenizer)["train"].dataloader
    assert loader.num_samples == math.ceil(kept / BATCH) * BATCH


def test_validation_split_yields_every_sample_once_decoded_and_tokenized(full_run: FullRun, clip) -> None:
    kept = full_run.ledger["kept"]
    args = training_args(["--val-data", pattern(full_run), "--val-num-samples", str(kept)])
    loader = get_data(args, (clip.preprocess, clip.preprocess), tokenizer=clip.tokenizer)["val"].dataloader
    images = torch.cat([b[0] for b in loader])
    texts = torch.cat([b[1] for b in loader])
    assert images.shape[0] == texts.shape[0] == kept
    raw = list(wds.WebDataset(pattern(full_run), shardshuffle=False))
    expected_images = torch.stack([
        clip.preprocess(Image.open(io.BytesIO(next(s[k] for k in ("jpg", "png", "webp") if k in s))).convert("RGB"))
        for s in raw
    ])
    torch.testing.assert_close(images, expected_images)
    assert torch.equal(texts, clip.tokenizer([s["txt"].decode() for s in raw]))
