"""load_clip / get_clip with real open_clip code paths on the curate-tiny architecture."""

from __future__ import annotations

import argparse
import io
import pickle
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from pipeline.models import (
    TINY_ARCH,
    CheckpointError,
    ModelSpec,
    clear_clip_cache,
    encode_pairs,
    get_clip,
    load_clip,
    make_tiny_checkpoint,
    make_tiny_hf_cache,
)
from pipeline.models.tiny import TINY_HF_REVISION

CAPTIONS = ["a red square", "a dog on grass", "", "ein Foto", "a b c " * 20]


def _png(seed: int, size: tuple[int, int] = (40, 56)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGES = [_png(i) for i in range(len(CAPTIONS))]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", seed=0)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; mirror the env var for this test.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _hf_weights(cache: Path) -> Path:
    return cache / "models--curate--curate-tiny" / "snapshots" / TINY_HF_REVISION / "open_clip_pytorch_model.bin"


def _embed(spec: ModelSpec) -> np.ndarray:
    result = encode_pairs(load_clip(spec), IMAGES, CAPTIONS, batch_size=2)
    return np.concatenate([result.image_emb, result.text_emb])


def test_same_seed_gives_identical_checkpoint_bytes(tmp_path: Path, checkpoint: Path) -> None:
    again = make_tiny_checkpoint(tmp_path / "other-name.bin", seed=0)
    assert again.read_bytes() == checkpoint.read_bytes()
    assert make_tiny_checkpoint(tmp_path / "seed1.pt", seed=1).read_bytes() != checkpoint.read_bytes()


def test_file_safetensors_hf_hub_and_local_dir_load_the_same_weights(
    tmp_path: Path, checkpoint: Path, offline: None
) -> None:
    reference = _embed(ModelSpec(TINY_ARCH, pretrained=str(checkpoint)))

    safetensors_file = tmp_path / "tiny.safetensors"
    save_file(torch.load(checkpoint, weights_only=True), safetensors_file)
    cache = tmp_path / "hf"
    arch = make_tiny_hf_cache(cache)
    snapshot = _hf_weights(cache).parent
    specs = [
        ModelSpec(TINY_ARCH, pretrained=str(safetensors_file)),
        ModelSpec(arch, cache_dir=str(cache)),
        ModelSpec(f"local-dir:{snapshot}"),
    ]
    for spec in specs:
        np.testing.assert_array_equal(_embed(spec), reference, err_msg=str(spec))
    # A different seed really gives different weights, so the equality above is meaningful.
    other = make_tiny_checkpoint(tmp_path / "seed1.pt", seed=1)
    assert not np.allclose(_embed(ModelSpec(TINY_ARCH, pretrained=str(other))), reference)


def test_hf_hub_without_weights_fails_instead_of_random_init(tmp_path: Path, offline: None) -> None:
    arch = make_tiny_hf_cache(tmp_path)
    weights = _hf_weights(tmp_path)
    weights.unlink()
    with pytest.raises(RuntimeError, match="could not be loaded"):
        load_clip(ModelSpec(arch, cache_dir=str(tmp_path)))


def test_pickled_objects_are_refused_by_hf_hub_and_file_loading(tmp_path: Path, offline: None) -> None:
    arch = make_tiny_hf_cache(tmp_path)
    weights = _hf_weights(tmp_path)
    state = torch.load(weights, weights_only=True)
    torch.save({"state_dict": state, "args": argparse.Namespace(lr=0.1)}, weights)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_clip(ModelSpec(arch, cache_dir=str(tmp_path)))
    with pytest.raises(CheckpointError, match="Weights only load failed"):
        load_clip(ModelSpec(TINY_ARCH, pretrained=str(weights)))


def test_hf_hub_not_in_cache_fails_offline(tmp_path: Path, offline: None) -> None:
    with pytest.raises(RuntimeError, match="curate/absent"):
        load_clip(ModelSpec("hf-hub:curate/absent", cache_dir=str(tmp_path)))


def _truncated(path: Path, checkpoint: Path) -> None:
    path.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])


def _random_bytes(path: Path, checkpoint: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _wrong_keys(path: Path, checkpoint: Path) -> None:
    state = torch.load(checkpoint, weights_only=True)
    state["visual.extra.weight"] = state.pop("visual.proj")
    torch.save({"state_dict": state}, path)


def _wrong_shape(path: Path, checkpoint: Path) -> None:
    state = torch.load(checkpoint, weights_only=True)
    state["text_projection"] = torch.zeros(3, 3)
    torch.save(state, path)


def _not_a_state_dict(path: Path, checkpoint: Path) -> None:
    torch.save([1, 2, 3], path)


@pytest.mark.parametrize(
    ("corrupt", "cause"),
    [
        (_truncated, "could not be read"),
        (_random_bytes, "could not be read"),
        (_wrong_keys, "(?s)does not match the architecture.*visual.proj"),
        (_wrong_shape, "(?s)does not match the architecture.*text_projection"),
        (_not_a_state_dict, "does not hold a state_dict"),
    ],
)
def test_corrupt_checkpoint_raises_checkpoint_error(tmp_path: Path, checkpoint: Path, corrupt, cause: str) -> None:
    path = tmp_path / "bad.pt"
    corrupt(path, checkpoint)
    with pytest.raises(CheckpointError, match=cause) as info:
        load_clip(ModelSpec(TINY_ARCH, pretrained=str(path)))
    assert str(path) in str(info.value)


def test_module_prefix_is_stripped(tmp_path: Path, checkpoint: Path) -> None:
    state = torch.load(checkpoint, weights_only=True)
    path = tmp_path / "ddp.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    np.testing.assert_array_equal(
        _embed(ModelSpec(TINY_ARCH, pretrained=str(path))), _embed(ModelSpec(TINY_ARCH, pretrained=str(checkpoint)))
    )


def test_missing_file_is_neither_tag_nor_file() -> None:
    with pytest.raises(CheckpointError, match="no such file, and not a pretrained tag"):
        load_clip(ModelSpec("ViT-B-32", pretrained="/nonexistent/epoch_3.pt"))


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="allow_random"):
        ModelSpec(TINY_ARCH)
    with pytest.raises(ValueError, match="pretrained must be None"):
        ModelSpec("hf-hub:org/repo", pretrained="x.pt")
    with pytest.raises(ValueError, match="precision"):
        ModelSpec(TINY_ARCH, allow_random=True, precision="fp8")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        load_clip(ModelSpec(TINY_ARCH, allow_random=True, precision="fp16"), "cpu")
    assert load_clip(ModelSpec(TINY_ARCH, allow_random=True)).precision == "fp32"


def test_quick_gelu_mismatch_is_refused_before_download() -> None:
    with pytest.raises(ValueError, match="ViT-B-32-quickgelu"):
        load_clip(ModelSpec("ViT-B-32", pretrained="openai", cache_dir="/nonexistent"))


def test_checkpoint_file_preprocessing_must_be_unambiguous(checkpoint: Path) -> None:
    # ViT-L-14's tags disagree on mean/std (laion2b_s32b_b82k uses 0.5); refused before building.
    with pytest.raises(ValueError, match="set ModelSpec.mean explicitly"):
        load_clip(ModelSpec("ViT-L-14", pretrained=str(checkpoint)))


def test_preprocess_overrides_reach_cfg_and_tensor(checkpoint: Path) -> None:
    default = load_clip(ModelSpec(TINY_ARCH, pretrained=str(checkpoint)))
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.5, 1.0)
    custom = load_clip(ModelSpec(TINY_ARCH, pretrained=str(checkpoint), mean=list(mean), std=std))
    assert custom.preprocess_cfg["mean"] == mean and custom.preprocess_cfg["std"] == std
    assert default.preprocess_cfg["mean"] == (0.48145466, 0.4578275, 0.40821073)
    assert custom.preprocess_cfg["size"] == default.preprocess_cfg["size"] == (32, 32)

    image = Image.open(io.BytesIO(IMAGES[0])).convert("RGB")
    raw = default.preprocess(image) * torch.tensor(default.preprocess_cfg["std"])[:, None, None]
    raw += torch.tensor(default.preprocess_cfg["mean"])[:, None, None]
    expected = (raw - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    torch.testing.assert_close(custom.preprocess(image), expected, atol=1e-5, rtol=0)


def test_image_size_override_resizes_model_and_preprocessing(checkpoint: Path) -> None:
    clip = load_clip(ModelSpec(TINY_ARCH, pretrained=str(checkpoint), image_size=48))
    assert clip.preprocess_cfg["size"] == (48, 48)
    assert encode_pairs(clip, IMAGES, CAPTIONS).image_emb.shape == (len(IMAGES), 64)


def test_get_clip_loads_once_per_spec_and_device(checkpoint: Path) -> None:
    clear_clip_cache()
    try:
        first = get_clip(ModelSpec(TINY_ARCH, pretrained=str(checkpoint), mean=[0.5, 0.5, 0.5]), "cpu")
        same = get_clip(ModelSpec(TINY_ARCH, pretrained=str(checkpoint), mean=(0.5, 0.5, 0.5)), torch.device("cpu"))
        other = get_clip(ModelSpec(TINY_ARCH, pretrained=str(checkpoint)), "cpu")
        assert same is first and other is not first
        assert first.embed_dim == 64 and first.device == torch.device("cpu")
        assert not first.model.training
    finally:
        clear_clip_cache()
