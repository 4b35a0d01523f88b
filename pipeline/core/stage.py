"""Stage plumbing: fingerprints, skip-if-done, discard half-written output, manifests written last."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any, ClassVar

from pyspark.sql import DataFrame, SparkSession

import pipeline
from pipeline.core import io, tables
from pipeline.core.code_version import code_hash
from pipeline.core.config import RunConfig
from pipeline.core.context import MANIFEST, SUCCESS, RunContext
from pipeline.core.model_spec import ModelSpec, model_files

log = logging.getLogger("curate")

PENDING = "_pending.json"


def digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


class Stage:
    """One resumable step. Subclasses set `name`, the tables they read and write (catalog names,
    `pipeline.core.tables`; `pool` is the samples alive when the stage runs) and implement `execute`.
    The runner puts in the stages that write what a stage reads, and `run` checks those tables
    before any work.

    `resumable` stages (one task per shard) keep finished shards of an interrupted attempt with the
    same fingerprint; others start from an empty folder. Either way `_manifest.json` and `_SUCCESS`
    are written last, so a folder without them is half-written and is redone.
    """

    name: ClassVar[str]
    resumable: ClassVar[bool] = False
    removes_samples: ClassVar[bool] = False  # writes DECISIONS rows under decisions/
    reads: ClassVar[tuple[str, ...]] = ()  # tables it reads ("pool", "embeddings", "assignments", ...)
    writes: ClassVar[tuple[str, ...]] = ()  # catalog tables it writes (a decision stage: its decisions too)
    seeded: ClassVar[bool] = False  # its output depends on the run seed, so the seed is in its config

    def reads_in(self, cfg: RunConfig) -> tuple[str, ...]:
        """The tables this stage reads in a run with `cfg` (by default `reads`; a stage whose inputs
        depend on its config overrides this)."""
        return self.reads

    # per decision reason, what its `score` measures (the x axis of the report's histogram)
    score_labels: ClassVar[dict[str, str]] = {}

    def kept_scores(self, ctx: RunContext, kept: DataFrame) -> dict[str, DataFrame]:
        """Per decision reason, (sample_id, score) of the `kept` samples (sample_id, uid) under
        this stage's rule, where the rule scores a sample on its own (the report draws them beside
        the removed ones); none by default (e.g. a duplicate's score needs its pair)."""
        return {}

    def check_config(self, cfg: RunConfig) -> None:
        """Raise ConfigError for what `cfg` lacks when this stage is part of the run (nothing by
        default; a section validates its own keys whether or not its stage runs)."""

    def thresholds(self, cfg: RunConfig) -> dict[str, float]:
        """Per decision reason, the value this stage compares the decision's `score` with (the run
        report draws it on that reason's score histogram); none by default."""
        return {}

    def config_json(self, cfg: RunConfig) -> str:
        """The part of the config this stage depends on (its hash is in the fingerprint): its
        section, and the run seed when the stage is `seeded`."""
        section = cfg.section_json(self.name) if hasattr(cfg, self.name) else "{}"
        if not self.seeded:
            return section
        return json.dumps({self.name: json.loads(section), "seed": cfg.seed}, sort_keys=True)

    def written_tables(self) -> list[tables.Table]:
        """The catalog tables this stage writes (`writes`, and its decisions and pool if it removes
        samples)."""
        own = [tables.decisions_table(self.name), tables.pool_table(self.name)] if self.removes_samples else []
        return [*(tables.CATALOG[name] for name in self.writes), *own]

    def external_files(self, cfg: RunConfig) -> list[str]:
        """Files outside the run that the stage reads (checkpoints, eval sets, target sets): their
        paths, sizes and modification times are in the input fingerprint. By default the local
        weights of the section's `model`, if it has one."""
        section = getattr(cfg, self.name, None)
        spec = getattr(section, "model", None)
        return model_files(spec) if isinstance(spec, ModelSpec) else []

    def input_fingerprint(self, ctx: RunContext) -> str:
        """Identity of the stage's inputs: by default the fingerprints of every stage before it, so a
        change anywhere upstream reruns this stage, and its external files."""
        files = self.external_files(ctx.cfg)
        external = (io.fingerprint_files(files),) if files else ()
        return digest(*(ctx.fingerprints[name] for name in ctx.earlier()), *external)

    def execute(self, ctx: RunContext, out_dir: str) -> dict[str, Any]:
        """Do the work into `out_dir`; return counts for the manifest."""
        raise NotImplementedError

    def code_version(self) -> str:
        """The package version plus a hash of the code of every product module this stage's module
        imports, directly or not (schemas included): editing any of them reruns the stage."""
        return f"{pipeline.__version__}+{code_hash(type(self).__module__)[:12]}"

    def fingerprint(self, ctx: RunContext) -> tuple[str, str, str]:
        """(fingerprint, config hash, input fingerprint) of this stage in this run (`ctx` as this
        stage sees it)."""
        ctx = ctx.for_stage(self.name)
        config_hash = digest(self.config_json(ctx.cfg))
        input_fp = self.input_fingerprint(ctx)
        return digest(self.name, self.code_version(), config_hash, input_fp), config_hash, input_fp

    def is_up_to_date(self, ctx: RunContext) -> bool:
        """A finished output with the fingerprint this run would give exists."""
        out_dir = ctx.stage_dir(self.name)
        if not io.exists(f"{out_dir}/{SUCCESS}"):
            return False
        expected = ctx.fingerprints.get(self.name) or self.fingerprint(ctx)[0]
        return io.read_json(f"{out_dir}/{MANIFEST}").get("fingerprint") == expected

    def run(self, ctx: RunContext, force: bool = False) -> dict[str, Any]:
        """Run unless a finished output with the same fingerprint exists; return the manifest. The
        tables it reads are checked first; earlier stages are neither run nor replayed."""
        ctx = ctx.for_stage(self.name)
        out_dir = ctx.stage_dir(self.name)
        fp, config_hash, input_fp = self.fingerprint(ctx)
        manifest_path = f"{out_dir}/{MANIFEST}"
        if not force and self.is_up_to_date(ctx):
            log.info("stage %s: up to date, skipped", self.name)
            return io.read_json(manifest_path)
        tables.check_inputs(ctx, self.reads_in(ctx.cfg))
        self._prepare(out_dir, fp, force)
        started = time.time()
        log.info("stage %s: running", self.name)
        try:
            counts = self.execute(ctx, out_dir)
            if self.removes_samples:
                tables.write_pool(ctx)
            for table in self.written_tables():
                tables.check_table(ctx, table, finished=False)
        except BaseException:
            self._discard_partial(out_dir)
            raise
        finished = time.time()
        manifest = {
            "stage": self.name,
            "fingerprint": fp,
            "config_hash": config_hash,
            "input_fingerprint": input_fp,
            "code_version": self.code_version(),
            "counts": counts,
            "started_at": started,
            "finished_at": finished,
            "seconds": round(finished - started, 3),
        }
        io.write_json_atomic(manifest_path, manifest)
        io.write_bytes_atomic(f"{out_dir}/{SUCCESS}", b"")
        if self.resumable:
            io.remove(f"{out_dir}/{PENDING}")
        log.info("stage %s: done in %.1fs", self.name, manifest["seconds"])
        return manifest

    def _discard_partial(self, out_dir: str) -> None:
        """After a failed or interrupted attempt: a stage that starts from an empty folder anyway
        deletes what it half wrote (freeing the space a full disk needs); a resumable stage keeps
        its finished shards for the rerun."""
        if self.resumable:
            return
        try:
            io.remove(out_dir)
        except OSError as err:  # read-only or gone: the rerun redoes the folder (no _SUCCESS) anyway
            log.warning("stage %s: could not remove its partial output %s: %s", self.name, out_dir, err)

    def _prepare(self, out_dir: str, fp: str, force: bool) -> None:
        pending = f"{out_dir}/{PENDING}"
        keep = self.resumable and not force and io.exists(pending) and io.read_json(pending).get("fingerprint") == fp
        if keep:
            log.info("stage %s: resuming an interrupted attempt", self.name)
            io.remove(f"{out_dir}/{SUCCESS}")
            io.remove(f"{out_dir}/{MANIFEST}")
            return
        io.remove(out_dir)
        io.makedirs(out_dir)
        if self.resumable:
            io.write_json_atomic(pending, {"fingerprint": fp})


def run_context(cfg: RunConfig, spark: SparkSession, stages: Sequence[Stage]) -> RunContext:
    """The context of a run of `stages`, in this order: which of them remove samples, and the
    fingerprint of each (computed once, before any stage runs)."""
    fingerprints: dict[str, str] = {}
    ctx = RunContext(cfg=cfg, spark=spark, order=tuple(s.name for s in stages),
                     decision_stages=tuple(s.name for s in stages if s.removes_samples), fingerprints=fingerprints)
    for stage in stages:
        fingerprints[stage.name] = stage.fingerprint(ctx)[0]
    return replace(ctx, fingerprints=MappingProxyType(dict(fingerprints)))
