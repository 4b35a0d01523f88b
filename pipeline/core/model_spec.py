"""Which CLIP model to load: a plain, hashable description (no torch import), used in run configs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.core.fields import setting

SCHEMA_PREFIXES = ("hf-hub:", "local-dir:")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


@dataclass(frozen=True)
class ModelSpec:
    """Which CLIP model to load and how to preprocess its input (hashable: a cache key)."""

    arch: str = setting(doc="open_clip model name (ViT-B-32, curate-tiny) or hf-hub:org/repo / local-dir:path")
    pretrained: str | None = setting(None, "pretrained tag or local checkpoint file; null = random init",
                                     path="checkpoint")
    cache_dir: str | None = setting(None, "open_clip / Hugging Face cache directory", path="path")
    allow_random: bool = setting(False, "must be true to run with random weights (pretrained null)")
    image_size: int | None = setting(None, "input size override; null = what the weights were trained with")
    mean: tuple[float, float, float] | None = setting(None, "normalisation mean override (RGB)")
    std: tuple[float, float, float] | None = setting(None, "normalisation std override (RGB)")
    interpolation: str | None = setting(None, "resize interpolation override: bicubic, bilinear, random")
    resize_mode: str | None = setting(None, "resize mode override: shortest, longest, squash")
    precision: str = setting("auto", "auto (fp32 on CPU, fp16 autocast on CUDA), fp32, fp16 or bf16")

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(float(v) for v in value)
                if len(value) != 3:
                    raise ValueError(f"{name} needs 3 values (RGB), got {value}")
                object.__setattr__(self, name, value)  # lists -> tuples keep the spec hashable
        if self.has_schema and self.pretrained is not None:
            raise ValueError(f"{self.arch!r} carries its own weights; pretrained must be None")
        if not self.has_schema and self.pretrained is None and not self.allow_random:
            raise ValueError(f"{self.arch!r} has no pretrained weights; set allow_random=True for random init")

    @property
    def has_schema(self) -> bool:
        """True for "hf-hub:" / "local-dir:" ids, whose config and weights come from that source."""
        return self.arch.startswith(SCHEMA_PREFIXES)

    def preprocess_overrides(self) -> dict:
        """The preprocessing values set explicitly on this spec (image_size is applied to the model)."""
        values = {key: getattr(self, key) for key in PREPROCESS_KEYS}
        return {key: value for key, value in values.items() if value is not None}


def model_files(spec: ModelSpec) -> list[str]:
    """The local files whose content `spec` loads, for fingerprints: a checkpoint file given as
    `pretrained`, every file of a `local-dir:` folder, or the `cache_dir` entries of an `hf-hub:`
    repo or a pretrained tag (a tag or an id names weights only as long as the cache holds them)."""
    files: list[str] = []
    if spec.pretrained is not None and Path(spec.pretrained).is_file():
        files.append(str(Path(spec.pretrained).resolve()))
    roots = []
    if spec.arch.startswith("local-dir:"):
        roots.append(Path(spec.arch[len("local-dir:"):]))
    if spec.cache_dir is not None and (spec.pretrained is not None or spec.arch.startswith("hf-hub:")):
        roots.append(Path(spec.cache_dir))
    for root in roots:
        if root.is_dir():
            files += sorted({str(p.resolve()) for p in root.rglob("*") if p.is_file()})
    return files
