"""Run configuration: the section of every stage and the whole run, as frozen dataclasses loaded
from YAML by the generic loader (`pipeline.core.config_loader`). Each field documents itself and
says whether it holds a path (`pipeline.core.fields.setting`); shared shapes are written once: the
keep target (`KeepTarget`) and the encoder (`Encoder`). `steps` is the only on/off switch of steps.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib.util
import json
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.core.config_loader import ConfigError, check, load, load_yaml
from pipeline.core.fields import setting
from pipeline.core.model_spec import ModelSpec
from pipeline.core.redact import is_secret_key


LANGUAGE_DETECTOR = "py3langid"  # the module of the optional extra `lang`


_check = check
__all__ = ["ConfigError"]  # raised by the loader; the stages import it from here


@dataclass(frozen=True)
class SparkConfig:
    """Session settings. Under spark-submit the cluster's own settings win and these are ignored."""

    master: str = setting("local[*]", "Spark master of an embedded run (local[*], spark://host:7077)")
    app_name: str = setting("curate", "Spark application name")
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = setting("WARN", "Spark's log level")
    conf: dict[str, str] = setting(factory=dict, doc="extra Spark settings of an embedded run (spark.* keys)")


@dataclass(frozen=True)
class IngestConfig:
    """Caps that protect the run from hostile or broken input; samples over a cap are quarantined."""

    max_pixels: int = setting(
        89_478_485, "images with more pixels (read from the header) are quarantined (PIL's bomb threshold)")
    max_aspect: float = setting(
        50.0, "images whose longest side exceeds this many times the shortest are quarantined: extreme_aspect "
        "(preprocessing resizes the shortest side, so its cost grows with the ratio)")
    max_image_bytes: int = setting(
        32 * 1024 * 1024, "image members larger than this are quarantined: image_too_large")
    max_caption_chars: int = setting(4096, "captions longer than this are quarantined: caption_too_long")

    def validate(self, prefix: str) -> None:
        _check(self.max_pixels > 0, f"{prefix}.max_pixels", "must be positive")
        _check(self.max_aspect >= 1, f"{prefix}.max_aspect", "must be at least 1")
        _check(self.max_image_bytes > 0, f"{prefix}.max_image_bytes", "must be positive")
        _check(self.max_caption_chars > 0, f"{prefix}.max_caption_chars", "must be positive")


@dataclass(frozen=True)
class BasicFilterConfig:
    """DataComp's basic filter: caption length, image size and aspect ratio."""

    min_side: int = setting(200, "remove images whose shorter side is below this (pixels)")
    max_aspect: float = setting(3.0, "remove images whose long/short side ratio exceeds this")
    min_caption_words: int = setting(3, "remove captions with fewer words")
    min_caption_chars: int = setting(6, "remove captions with fewer characters")
    # keep captions detected as one of these ISO 639-1 codes; () = no language rule. Needs the
    # optional detector (extra `lang`); without it the config is refused, naming the extra.
    languages: tuple[str, ...] = setting(
        (), "keep captions detected as one of these ISO 639-1 codes; [] = no language rule (needs the [lang] extra)")

    def validate(self, prefix: str) -> None:
        _check(all(re.fullmatch(r"[a-z]{2,3}", code) for code in self.languages), f"{prefix}.languages",
               "expected ISO 639-1 codes such as 'en'")
        _check(not self.languages or importlib.util.find_spec(LANGUAGE_DETECTOR) is not None, f"{prefix}.languages",
               f"needs the caption language detector ({LANGUAGE_DETECTOR}): pip install 'curate-pipeline[lang]'")
        _check(self.min_side >= 0, f"{prefix}.min_side", "must be >= 0")
        _check(self.max_aspect >= 1.0, f"{prefix}.max_aspect", "must be >= 1.0")
        _check(self.min_caption_words >= 0, f"{prefix}.min_caption_words", "must be >= 0")
        _check(self.min_caption_chars >= 0, f"{prefix}.min_caption_chars", "must be >= 0")


@dataclass(frozen=True)
class ExactDedupConfig:
    """Exact dedup by content hash: the sample with the smallest sample_id of each uid is kept."""


@dataclass(frozen=True)
class PhashDedupConfig:
    """Near-duplicates by 64-bit pHash: samples within `threshold` bits are linked (banding, see
    pipeline/dedup/phash.py), and of each connected group the smallest sample_id is kept."""

    threshold: int = setting(
        4, "max Hamming distance of near-duplicate pHashes (the 64 bits form threshold + 1 bands)")
    max_bucket: int = setting(
        5000, "distinct hashes in one (band, value) bucket above which it is not joined (skipped buckets are counted)")
    max_edges: int = setting(5_000_000, "linked hash pairs resolved into groups on the driver; more is an error")
    # pHash squashes images to 32x32: also require aspect ratios within this relative change (null: off)
    max_aspect_change: float | None = setting(
        0.02, "also require aspect ratios within this relative change (null: off)")

    def validate(self, prefix: str) -> None:
        _check(0 <= self.threshold <= 16, f"{prefix}.threshold", "must be in [0, 16] (bands of >= 3 bits)")
        _check(self.max_aspect_change is None or self.max_aspect_change >= 0, f"{prefix}.max_aspect_change",
               "must be >= 0")
        _check(self.max_bucket >= 2, f"{prefix}.max_bucket", "must be >= 2")
        _check(self.max_edges >= 1, f"{prefix}.max_edges", "must be >= 1")


@dataclass(frozen=True)
class SemDedupConfig:
    """SemDeDup within concept clusters: in keep order, a sample whose cosine to any earlier sample
    of its cluster exceeds 1 - eps is removed. `on: image+text` compares the concatenated unit
    image and text embeddings (cosine = mean of the two cosines). With `keep_fraction` or
    `keep_count` instead, eps is the one that keeps that many: the samples with the highest cosine
    to an earlier sample are removed (ties by sample_id), as the paper sweeps eps for a target size."""

    eps: float = setting(0.05, "remove a sample whose cosine to an earlier sample of its cluster exceeds 1 - eps")
    keep_fraction: float | None = setting(None, "instead of eps: keep this fraction of the pool (eps follows)")
    keep_count: int | None = setting(None, "instead of eps: keep this many samples (eps follows)")
    keep: Literal["hard", "easy", "random"] = setting(
        "hard", "which sample of a duplicate group stays: hard (farthest from the centroid), easy, random")
    on: Literal["image", "text", "image+text"] = setting(
        "image", "which embeddings are compared: image, text or image+text")
    block_size: int = setting(2048, "rows per similarity block: a task holds block_size^2 float64 at a time")

    def validate(self, prefix: str) -> None:
        _check(0.0 < self.eps < 1.0, f"{prefix}.eps", "must be in (0, 1)")
        _check(self.block_size >= 1, f"{prefix}.block_size", "must be >= 1")
        _check_keep(prefix, self.keep_fraction, self.keep_count)


@dataclass(frozen=True)
class DecontaminateConfig:
    """Removes pool samples that match an evaluation-set image: same bytes (exact), pHash within
    `phash_threshold` bits (phash), or image-embedding cosine >= `cosine_threshold` with the embed
    stage's model (semantic). `eval_sets`: img2dataset shard folders/globs or plain image folders."""

    eval_sets: tuple[str, ...] = setting(
        (), "evaluation sets to remove from the pool: img2dataset shard folders/globs or image folders",
        path="existing")
    methods: tuple[Literal["exact", "phash", "semantic"], ...] = setting(
        ("exact", "phash", "semantic"), "how a sample matches an eval image: exact (sha256), phash, semantic (cosine)")
    phash_threshold: int = setting(4, "max pHash Hamming distance of a phash match")
    cosine_threshold: float = setting(0.95, "min image-embedding cosine of a semantic match")
    max_bucket: int = setting(5000, "as phash_dedup.max_bucket")
    batch_size: int = setting(64, "eval images per forward pass (on the driver)")

    def validate(self, prefix: str) -> None:
        _check(len(set(self.methods)) == len(self.methods) and self.methods, f"{prefix}.methods",
               "must list each method at most once, and at least one")
        _check(0 <= self.phash_threshold <= 16, f"{prefix}.phash_threshold", "must be in [0, 16]")
        _check(-1.0 <= self.cosine_threshold <= 1.0, f"{prefix}.cosine_threshold", "must be in [-1, 1]")
        _check(self.max_bucket >= 2, f"{prefix}.max_bucket", "must be >= 2")
        _check(self.batch_size >= 1, f"{prefix}.batch_size", "must be >= 1")


@dataclass(frozen=True)
class Encoder:
    """An open_clip model and how to run it in the per-shard encoding tasks (embed, dfn)."""

    model: ModelSpec | None = setting(
        None, "the open_clip model (arch, pretrained tag or checkpoint file, cache_dir, preprocessing)")
    batch_size: int = setting(256, "images per forward pass")
    decode_workers: int = setting(2, "threads decoding/preprocessing ahead of the forward pass")
    threads: int = setting(0, "torch threads per task; 0 = the task's spark.task.cpus")

    def validate(self, prefix: str) -> None:
        _check(self.batch_size >= 1, f"{prefix}.batch_size", "must be >= 1")
        _check(self.decode_workers >= 1, f"{prefix}.decode_workers", "must be >= 1")
        _check(self.threads >= 0, f"{prefix}.threads", "must be >= 0")


@dataclass(frozen=True)
class EmbedConfig(Encoder):
    """open_clip embeddings of the samples still alive after the cheap filters.

    Either `model` (any open_clip architecture; weights from a tag + cache_dir, a local checkpoint
    file, or an hf-hub id) or `precomputed` (a clip-retrieval output folder: img_emb/*.npy,
    text_emb/*.npy, metadata/*.parquet, joined to samples on `join_on`).
    """

    enabled: bool = setting(False, "run the embed stage even when no step reads embeddings")
    precomputed: str | None = setting(
        None, "a clip-retrieval output folder (img_emb/, text_emb/, metadata/) instead of a model", path="existing")
    join_on: Literal["url", "key"] = setting("url", "column joining precomputed embeddings to samples: url or key")

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        _check(self.model is None or self.precomputed is None, f"{prefix}.model",
               "set exactly one of 'model' and 'precomputed'")
        if self.precomputed is not None and "://" not in self.precomputed:
            _check(Path(self.precomputed, "img_emb").is_dir(), f"{prefix}.precomputed",
                   f"'{self.precomputed}' has no img_emb/ folder")


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

    enabled: bool = setting(False, "run the cluster stage even when no step reads its tables")
    n_clusters: int = setting(1000, "number of k-means concepts K")
    sample_size: int = setting(256_000, "training sample drawn uniformly (seeded) in Spark")
    iterations: int = setting(20, "k-means iterations")
    redo: int = setting(1, "train this many times (different seeds), keep the best objective")
    init: Literal["kmeans++", "random"] = setting(
        "kmeans++", "centroid initialisation: kmeans++ or random (FAISS's own)")
    max_points_per_centroid: int = setting(256, "training points per centroid at most (FAISS's cap)")
    neighbours: int = setting(20, "k nearest other centroids for d_inter (capped at n_clusters - 1)")
    index: Literal["flat", "ivf"] = setting(
        "flat", "assignment index: flat (exact) or ivf (approximate, for very large K)")
    ivf_nlist: int = setting(0, "ivf cells over the centroids; 0: round(sqrt(n_clusters))")
    nprobe: int = setting(8, "ivf cells searched per point; nprobe >= nlist is exact")
    assign_batch_size: int = setting(65_536, "rows per FAISS search call in a task")
    # how assignment tasks read the embeddings: "dataframe": mapInArrow over the embeddings
    # DataFrame (Spark's Parquet reader, composes with joins/filters); "files": one task per Parquet
    # file of that DataFrame (DataFrame.inputFiles()), read with pyarrow: same outputs, ~3x less
    # CPU on list<float> columns (Spark's reader + its row-wise Arrow conversion are the cost)
    assign_from: Literal["dataframe", "files"] = setting(
        "dataframe", "how assignment tasks read embeddings: dataframe (Spark) or files (pyarrow per Parquet file)")
    centroids: str | None = setting(
        None, "frozen concepts: a K x d .npy, or a previous run's cluster folder; assign without training (K from it)",
        path="existing")

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
class BudgetConfig:
    """A planned training budget ("Scaling Laws for Data Filtering"): keep at least
    ceil(samples_seen / max_repeats) samples, so that no sample is seen more than max_repeats times."""

    samples_seen: int = setting(doc="samples the planned training run will see")
    max_repeats: float = setting(
        doc="no sample seen more often than this: keep at least ceil(samples_seen / max_repeats)")

    def validate(self, prefix: str) -> None:
        _check(self.samples_seen >= 1, f"{prefix}.samples_seen", "must be >= 1")
        _check(self.max_repeats > 0, f"{prefix}.max_repeats", "must be > 0")


def _check_keep(prefix: str, fraction: float | None, count: int | None, fraction_key: str = "keep_fraction") -> None:
    _check(fraction is None or 0.0 <= fraction <= 1.0, f"{prefix}.{fraction_key}", "must be in [0, 1]")
    _check(count is None or count >= 0, f"{prefix}.keep_count", "must be >= 0")
    _check(fraction is None or count is None, f"{prefix}.keep_count", f"set at most one of {fraction_key} and keep_count")


@dataclass(frozen=True)
class KeepTarget:
    """How many samples a pruning step keeps: keep_fraction or keep_count of the alive pool, raised
    by `budget` (pipeline/prune/keep.py)."""

    keep_fraction: float | None = setting(None, "keep this fraction of the alive pool")
    keep_count: int | None = setting(None, "keep this many samples")
    budget: BudgetConfig | None = setting(
        None, "raise the kept count to a training budget (samples_seen, max_repeats)")

    def validate(self, prefix: str) -> None:
        _check_keep(prefix, self.keep_fraction, self.keep_count)

    def require(self, prefix: str) -> None:
        """A step that runs needs a target."""
        _check(self.keep_fraction is not None or self.keep_count is not None or self.budget is not None,
               f"{prefix}.keep_fraction", "set keep_fraction, keep_count or budget")


@dataclass(frozen=True)
class DbpConfig(KeepTarget):
    """Density-based pruning: per-cluster quotas from softmax(complexity / tau), the farthest from
    the centroid kept. How many: the keep target."""

    tau: float = setting(0.5, "softmax temperature of the cluster complexities")
    min_share: float = setting(0.5, "per-cluster floor m = floor(min_share * N_keep / K), capped by the cluster size")

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        _check(self.tau > 0, f"{prefix}.tau", "must be > 0")
        _check(0.0 <= self.min_share <= 1.0, f"{prefix}.min_share", "must be in [0, 1]")


@dataclass(frozen=True)
class SspConfig(KeepTarget):
    """Self-supervised prototypes pruning: the samples closest to their centroid are removed."""

    scope: Literal["global", "cluster"] = setting(
        "global", "global, or cluster: every cluster keeps the same fraction")


@dataclass(frozen=True)
class RandomConfig(KeepTarget):
    """Random baseline (seeded by the run seed): uniform, or the same quota per cluster."""

    balance: Literal["none", "cluster"] = setting("none", "none (uniform) or cluster (the same quota per cluster)")


@dataclass(frozen=True)
class DfnConfig(Encoder):
    """DFN-style filtering: a filtering network's image-text cosine per pair (`model`: the filtering
    network; without one, the embed stage's clip_score: DataComp's CLIP-score filter), kept by
    `threshold`, `top_fraction` or `keep_count` (the keep_count best)."""

    threshold: float | None = setting(None, "keep samples with score >= threshold")
    top_fraction: float | None = setting(None, "keep the ceil(f * N) best of the pool")
    keep_count: int | None = setting(None, "keep the keep_count best of the pool")
    budget: BudgetConfig | None = setting(
        None, "with top_fraction or keep_count: raise the kept count to a training budget")
    quantile: Literal["exact", "approximate"] = setting(
        "exact", "exact (sort + rank) or approximate (Spark's approxQuantile)")
    relative_error: float = setting(0.001, "approximate: the kept count is within +-relative_error * N of the target")

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        _check_keep(prefix, self.top_fraction, self.keep_count, "top_fraction")
        _check(self.threshold is None or (self.top_fraction is None and self.keep_count is None),
               f"{prefix}.threshold", "set only one of threshold, top_fraction and keep_count")
        _check(self.budget is None or self.threshold is None, f"{prefix}.budget", "applies to top_fraction, not threshold")
        _check(0.0 < self.relative_error < 1.0, f"{prefix}.relative_error", "must be in (0, 1)")


@dataclass(frozen=True)
class ImageBasedConfig:
    """DataComp's image-based filter: keep samples whose cluster is the nearest cluster of some
    target-set image. `target`: img2dataset shards (embedded with embed.model) or .npy image
    embeddings (a file or a folder of them)."""

    target: str | None = setting(
        None, "target set: img2dataset shards (embedded with embed.model) or .npy image embeddings", path="existing")


@dataclass(frozen=True)
class ExportConfig:
    """Output WebDataset shards."""

    samples_per_shard: int = setting(10_000, "samples per output tar at most")
    max_shard_bytes: int | None = setting(None, "also start a new shard near this many bytes (webdataset's maxsize)")
    # shuffle: seeded by the run seed; source: by sample_id; cluster: grouped by cluster id, seeded inside
    order: Literal["shuffle", "source", "cluster"] = setting(
        "shuffle", "sample order: shuffle (seeded), source (by sample_id), cluster (grouped by cluster, seeded inside)")
    include_embeddings: bool = setting(False, "image_emb and text_emb columns in the output Parquet")

    def validate(self, prefix: str) -> None:
        _check(self.samples_per_shard > 0, f"{prefix}.samples_per_shard", "must be positive")
        _check(self.max_shard_bytes is None or self.max_shard_bytes > 0, f"{prefix}.max_shard_bytes",
               "must be positive")


OptionValue = str | bool | int | float


@dataclass(frozen=True)
class StorageConfig:
    """fsspec settings for object-store URLs, used wherever the product opens a file (the driver
    and every Spark task). Credentials never go here: they come from the environment or the store's
    own credential files (AWS_ACCESS_KEY_ID / ~/.aws/credentials, GOOGLE_APPLICATION_CREDENTIALS)."""

    endpoint_url: str | None = setting(None, "S3-compatible endpoint for s3:// and s3a:// (MinIO, Ceph, R2, ...); null: AWS")
    region: str | None = setting(None, "S3 region name; null: from the environment or the profile")
    anon: bool = setting(False, "anonymous access to public buckets (s3://, s3a://, gs://): no credentials looked up")
    profile: str | None = setting(None, "named profile of the AWS credential files")
    options: dict[str, dict[str, OptionValue]] = setting(
        factory=dict, doc="further fsspec arguments per protocol, e.g. {gs: {project: p}}; never credentials")

    def validate(self, prefix: str) -> None:
        for protocol, kwargs in self.options.items():
            for key in kwargs:
                _check(not is_secret_key(key), f"{prefix}.options.{protocol}.{key}",
                       "credentials are read from the environment or credential files, never from the config")

    def by_protocol(self) -> dict[str, dict[str, Any]]:
        """fsspec keyword arguments per URL protocol: the named settings for S3 (s3fs; `anon` for
        GCS's gcsfs too), then `options` on top."""
        s3: dict[str, Any] = {}
        gcs: dict[str, Any] = {}
        if self.endpoint_url is not None:
            s3["endpoint_url"] = self.endpoint_url
        if self.region is not None:
            s3["client_kwargs"] = {"region_name": self.region}
        if self.profile is not None:
            s3["profile"] = self.profile
        if self.anon:
            s3["anon"] = True
            gcs["token"] = "anon"
        named = {"s3": s3, "s3a": s3, "gs": gcs, "gcs": gcs}
        merged = {p: {**named.get(p, {}), **kw} for p, kw in self.options.items()}
        return {p: kw for p, kw in {**named, **merged}.items() if kw}


@dataclass(frozen=True)
class RunConfig:
    """A whole run. `input` is a directory of img2dataset shards, a glob or a brace pattern of tars."""

    input: str = setting(
        doc="img2dataset shards: a folder, a glob or a brace pattern of tars (local or an fsspec URL)", path="path")
    run_dir: str = setting(doc="where the run writes every stage's output, the ledger and the report", path="path")
    seed: int = setting(0, "seed of every random choice (sampling, k-means, shuffles)")
    # Sample-removing steps in run order; each sees only what the steps before it kept.
    steps: tuple[str, ...] = setting(
        ("basic_filter", "exact_dedup"), "sample-removing steps in run order; each sees what the earlier ones kept")
    spark: SparkConfig = setting(factory=SparkConfig, doc="Spark session of an embedded run")
    ingest: IngestConfig = setting(factory=IngestConfig, doc="input caps")
    basic_filter: BasicFilterConfig = setting(factory=BasicFilterConfig, doc="DataComp's basic filter")
    exact_dedup: ExactDedupConfig = setting(factory=ExactDedupConfig, doc="exact dedup by content hash")
    phash_dedup: PhashDedupConfig = setting(factory=PhashDedupConfig, doc="near-duplicates by pHash")
    semdedup: SemDedupConfig = setting(factory=SemDedupConfig, doc="SemDeDup within concept clusters")
    decontaminate: DecontaminateConfig = setting(factory=DecontaminateConfig, doc="removal of eval-set images")
    embed: EmbedConfig = setting(factory=EmbedConfig, doc="open_clip embeddings")
    cluster: ClusterConfig = setting(factory=ClusterConfig, doc="spherical k-means concepts")
    dbp: DbpConfig = setting(factory=DbpConfig, doc="density-based pruning")
    ssp: SspConfig = setting(factory=SspConfig, doc="self-supervised prototypes pruning")
    random: RandomConfig = setting(factory=RandomConfig, doc="random baseline")
    dfn: DfnConfig = setting(factory=DfnConfig, doc="DFN-style / CLIP-score filter")
    image_based: ImageBasedConfig = setting(factory=ImageBasedConfig, doc="DataComp's image-based filter")
    export: ExportConfig = setting(factory=ExportConfig, doc="output WebDataset shards")
    storage_options: StorageConfig = setting(
        factory=StorageConfig, doc="fsspec settings for object-store URLs (endpoint, region, anonymous access, profile)")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view, as saved in the run directory."""
        return dataclasses.asdict(self)

    def section_json(self, name: str) -> str:
        """Canonical JSON of one section (its hash decides whether a stage reruns)."""
        return json.dumps(dataclasses.asdict(getattr(self, name)), sort_keys=True)

    def validate(self, prefix: str) -> None:
        """Checks across sections (each section checks its own keys)."""
        _check(self.export.order != "cluster" or self.cluster.enabled, "export.order",
               "'cluster' needs cluster.enabled: true")
        _check(not self.export.include_embeddings or self.embed.enabled, "export.include_embeddings",
               "needs embed.enabled: true")
        _check(not _overlaps(self.input, self.run_dir), "run_dir",
               f"'{self.run_dir}' and the input '{self.input}' overlap (stages delete and rewrite folders "
               "in the run dir, and a run dir inside the input would be read as input): put them apart")
        for name in self.steps:
            section = getattr(self, name, None)
            if isinstance(section, KeepTarget):
                section.require(name)
        _check("dfn" not in self.steps or self.dfn.threshold is not None or self.dfn.top_fraction is not None
               or self.dfn.keep_count is not None or self.dfn.budget is not None,
               "dfn.threshold", "set threshold, top_fraction or keep_count")
        _check("image_based" not in self.steps or self.image_based.target is not None, "image_based.target",
               "is required by the image_based step")
        decontaminate = "decontaminate" in self.steps
        _check(not decontaminate or self.decontaminate.eval_sets, "decontaminate.eval_sets",
               "is required by the decontaminate step")
        _check(not decontaminate or "semantic" not in self.decontaminate.methods or self.embed.model is not None,
               "decontaminate.methods", "'semantic' embeds the eval sets with embed.model: set it, or drop 'semantic'")


def _real(path: str) -> str:
    path = path.rstrip("/") or "/"
    return os.path.realpath(path) if "://" not in path else path


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _overlaps(input_spec: str, run_dir: str) -> bool:
    """True if some brace alternative of `input_spec` names a path in `run_dir` (the input inside
    the run dir), or is a glob that can match files the run writes under `run_dir` (a run dir
    inside the input: `**` below it, or leading components that match the run dir's). Local paths
    are compared with links resolved."""
    from braceexpand import braceexpand

    run = _real(run_dir)
    for spec in braceexpand(input_spec):
        head, *wild = re.split(r"[*?\[]", spec, maxsplit=1)
        if not wild:  # a folder (its *.tar) or a file
            if _under(_real(spec), run):
                return True
            continue
        fixed = head if head.endswith("/") else posixpath.dirname(head)
        root = _real(fixed)
        if _under(root, run):
            return True
        pattern = f"{root.rstrip('/')}/{spec[len(fixed):].lstrip('/')}".split("/")
        if "**" in pattern and _under(run, root):
            return True
        parts = run.split("/")
        if len(pattern) > len(parts) and all(fnmatch.fnmatchcase(r, p) for r, p in zip(parts, pattern)):
            return True
    return False


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Validate plain data into a RunConfig (local paths made absolute)."""
    return load(RunConfig, data)


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config, apply `key=value` overrides, validate and return it."""
    return load_yaml(RunConfig, path, overrides)
