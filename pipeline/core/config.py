"""Run configuration: one YAML file -> frozen, validated dataclasses.

Every error names the offending key and is raised before Spark starts or anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.core.model_spec import ModelSpec


class ConfigError(ValueError):
    """A configuration problem, always naming the key at fault."""


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': {message}")


@dataclass(frozen=True)
class SparkConfig:
    """Session settings. Under spark-submit the cluster's own settings win and these are ignored."""

    master: str = "local[*]"
    app_name: str = "curate"
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "WARN"
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestConfig:
    """Caps that protect the run from hostile or broken input; samples over a cap are quarantined."""

    max_pixels: int = 89_478_485  # PIL's own decompression-bomb threshold
    max_image_bytes: int = 32 * 1024 * 1024
    max_caption_chars: int = 4096

    def validate(self, prefix: str) -> None:
        _check(self.max_pixels > 0, f"{prefix}.max_pixels", "must be positive")
        _check(self.max_image_bytes > 0, f"{prefix}.max_image_bytes", "must be positive")
        _check(self.max_caption_chars > 0, f"{prefix}.max_caption_chars", "must be positive")


@dataclass(frozen=True)
class BasicFilterConfig:
    """DataComp's basic filter: caption length, image size and aspect ratio."""

    enabled: bool = True
    min_side: int = 200
    max_aspect: float = 3.0
    min_caption_words: int = 3
    min_caption_chars: int = 6

    def validate(self, prefix: str) -> None:
        _check(self.min_side >= 0, f"{prefix}.min_side", "must be >= 0")
        _check(self.max_aspect >= 1.0, f"{prefix}.max_aspect", "must be >= 1.0")
        _check(self.min_caption_words >= 0, f"{prefix}.min_caption_words", "must be >= 0")
        _check(self.min_caption_chars >= 0, f"{prefix}.min_caption_chars", "must be >= 0")


@dataclass(frozen=True)
class ExactDedupConfig:
    """Exact dedup by content hash: the sample with the smallest sample_id of each uid is kept."""

    enabled: bool = True


@dataclass(frozen=True)
class EmbedConfig:
    """open_clip embeddings of the samples still alive after the cheap filters.

    Either `model` (any open_clip architecture; weights from a tag + cache_dir, a local checkpoint
    file, or an hf-hub id) or `precomputed` (a clip-retrieval output folder: img_emb/*.npy,
    text_emb/*.npy, metadata/*.parquet, joined to samples on `join_on`).
    """

    enabled: bool = False
    model: ModelSpec | None = None
    batch_size: int = 256
    decode_workers: int = 2  # threads decoding/preprocessing ahead of the forward pass
    threads: int = 0  # torch threads per task; 0 = the task's spark.task.cpus
    precomputed: str | None = None
    join_on: Literal["url", "key"] = "url"

    def validate(self, prefix: str) -> None:
        _check(self.batch_size >= 1, f"{prefix}.batch_size", "must be >= 1")
        _check(self.decode_workers >= 1, f"{prefix}.decode_workers", "must be >= 1")
        _check(self.threads >= 0, f"{prefix}.threads", "must be >= 0")
        if not self.enabled:
            return
        _check((self.model is None) != (self.precomputed is None), f"{prefix}.model",
               "set exactly one of 'model' and 'precomputed' when embed is enabled")
        if self.precomputed is not None and "://" not in self.precomputed:
            _check(Path(self.precomputed, "img_emb").is_dir(), f"{prefix}.precomputed",
                   f"'{self.precomputed}' has no img_emb/ folder")
        pretrained = self.model.pretrained if self.model else None
        if pretrained is not None and _looks_like_path(pretrained):
            _check(Path(pretrained).is_file(), f"{prefix}.model.pretrained", f"no checkpoint file at '{pretrained}'")


def _looks_like_path(value: str) -> bool:
    """A checkpoint reference that is a file path rather than a pretrained tag."""
    return "/" in value or value.endswith((".pt", ".pth", ".bin", ".safetensors"))


@dataclass(frozen=True)
class ClusterConfig:
    """Spherical k-means over image embeddings (FAISS): train on a sample, assign everything.

    Defaults suit 10^5-10^9 samples: K = 1000 concepts trained on up to 256 points per centroid
    (FAISS's own cap), 20 iterations; raise `n_clusters` (and `index: ivf`) beyond 10^8.
    The training sample is min(sample_size, n_clusters * max_points_per_centroid, rows) rows: FAISS
    would subsample anything above the per-centroid cap, so those rows are never drawn.
    Fewer usable embeddings than `n_clusters` is an error naming `cluster.n_clusters` (K is never
    lowered silently: later stages' quotas depend on it). The run's `seed` seeds the sample and FAISS.
    """

    enabled: bool = False
    n_clusters: int = 1000
    sample_size: int = 256_000  # training sample drawn uniformly (seeded) in Spark
    iterations: int = 20
    redo: int = 1  # train this many times (different seeds), keep the best objective
    init: Literal["kmeans++", "random"] = "kmeans++"  # random: FAISS's own (random sample points)
    max_points_per_centroid: int = 256
    neighbours: int = 20  # k nearest other centroids for d_inter (capped at n_clusters - 1)
    index: Literal["flat", "ivf"] = "flat"  # assignment index; ivf (approximate) for very large K
    ivf_nlist: int = 0  # ivf cells over the centroids; 0: round(sqrt(n_clusters))
    nprobe: int = 8  # ivf cells searched per point; nprobe >= nlist is exact
    assign_batch_size: int = 65_536  # rows per FAISS search call in a task

    def validate(self, prefix: str) -> None:
        _check(self.n_clusters >= 1, f"{prefix}.n_clusters", "must be >= 1")
        _check(self.sample_size >= self.n_clusters, f"{prefix}.sample_size", "must be >= n_clusters")
        _check(self.iterations >= 1, f"{prefix}.iterations", "must be >= 1")
        _check(self.redo >= 1, f"{prefix}.redo", "must be >= 1")
        _check(self.max_points_per_centroid >= 1, f"{prefix}.max_points_per_centroid", "must be >= 1")
        _check(self.neighbours >= 1, f"{prefix}.neighbours", "must be >= 1")
        _check(0 <= self.ivf_nlist <= self.n_clusters, f"{prefix}.ivf_nlist", "must be in [0, n_clusters]")
        _check(self.nprobe >= 1, f"{prefix}.nprobe", "must be >= 1")
        _check(self.assign_batch_size >= 1, f"{prefix}.assign_batch_size", "must be >= 1")


@dataclass(frozen=True)
class ExportConfig:
    """Output WebDataset shards."""

    samples_per_shard: int = 10_000
    order: Literal["shuffle", "source"] = "shuffle"  # shuffle uses the run seed

    def validate(self, prefix: str) -> None:
        _check(self.samples_per_shard > 0, f"{prefix}.samples_per_shard", "must be positive")


@dataclass(frozen=True)
class RunConfig:
    """A whole run. `input` is a directory of img2dataset shards, a glob or a brace pattern of tars."""

    input: str
    run_dir: str
    seed: int = 0
    # Sample-removing steps in run order; each sees only what the steps before it kept.
    steps: tuple[str, ...] = ("basic_filter", "exact_dedup")
    spark: SparkConfig = field(default_factory=SparkConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    basic_filter: BasicFilterConfig = field(default_factory=BasicFilterConfig)
    exact_dedup: ExactDedupConfig = field(default_factory=ExactDedupConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view, as saved in the run directory."""
        return dataclasses.asdict(self)

    def section_json(self, name: str) -> str:
        """Canonical JSON of one section (its hash decides whether a stage reruns)."""
        return json.dumps(dataclasses.asdict(getattr(self, name)), sort_keys=True)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it converted to the dataclass form."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        _check(isinstance(value, dict), key, f"expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        _check(value in choices, key, f"expected one of {list(choices)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            _check(type(None) in options, key, "must not be null")
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is dict:
        kt, vt = typing.get_args(tp)
        _check(isinstance(value, dict), key, f"expected a mapping, got {type(value).__name__}")
        return {_coerce(k, kt, f"{key}.{k}"): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if origin in (tuple, list):
        (item_tp, *_) = typing.get_args(tp)
        _check(isinstance(value, list | tuple), key, f"expected a list, got {type(value).__name__}")
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        _check(ok, key, f"expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        _check(ok, key, f"expected an integer, got {type(value).__name__} {value!r}")
        return value
    _check(isinstance(value, tp), key, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        dotted = f"{prefix}.{name}" if prefix else str(name)
        _check(name in fields, dotted, f"unknown key (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        dotted = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], dotted)
        else:
            no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            _check(not no_default, dotted, "is required")
    try:
        obj = cls(**kwargs)
    except ValueError as err:
        raise ConfigError(f"config key '{prefix or '<root>'}': {err}") from None
    if hasattr(obj, "validate"):
        obj.validate(prefix)
    return obj


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        _check(isinstance(child, dict), dotted, f"'{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ["a.b=1", "input=x"] into a nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override '{pair}': expected key=value")
        key, raw = pair.split("=", 1)
        _set_dotted(out, key.strip(), yaml.safe_load(raw) if raw != "" else "")
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def _absolute(path: str) -> str:
    """Local relative paths become absolute (relative to the working directory); URLs stay as they are."""
    if "://" in path:
        return path
    return str(Path(path).expanduser().resolve())


def _absolute_paths(data: dict[str, Any]) -> dict[str, Any]:
    """Make the path-valued keys absolute before validation (which checks that they exist)."""
    data = _merge(data, {})
    for key in ("input", "run_dir"):
        if isinstance(data.get(key), str):
            data[key] = _absolute(data[key])
    embed = data.get("embed")
    if isinstance(embed, dict):
        embed = data["embed"] = dict(embed)
        if isinstance(embed.get("precomputed"), str):
            embed["precomputed"] = _absolute(embed["precomputed"])
        model = embed.get("model")
        if isinstance(model, dict):
            model = embed["model"] = dict(model)
            if isinstance(model.get("cache_dir"), str):
                model["cache_dir"] = _absolute(model["cache_dir"])
            if isinstance(model.get("pretrained"), str) and _looks_like_path(model["pretrained"]):
                model["pretrained"] = _absolute(model["pretrained"])
    return data


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Validate plain data into a RunConfig (local paths made absolute)."""
    _check(isinstance(data, dict), "<root>", "the config must be a mapping")
    return _build(RunConfig, _absolute_paths(data), "")


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config, apply `key=value` overrides, validate and return it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{path}' is not valid YAML: {err}") from err
    _check(isinstance(data, dict), "<root>", "the config must be a mapping")
    return config_from_dict(_merge(data, parse_overrides(overrides or [])))
