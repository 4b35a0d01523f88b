"""Stage plumbing: fingerprints, skip-if-done, discard half-written output, manifests written last."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any, ClassVar

import pipeline
from pipeline.core import io
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
    """One resumable step. Subclasses set `name` and implement `execute`.

    `resumable` stages (one task per shard) keep finished shards of an interrupted attempt with the
    same fingerprint; others start from an empty folder. Either way `_manifest.json` and `_SUCCESS`
    are written last, so a folder without them is half-written and is redone.
    """

    name: ClassVar[str]
    resumable: ClassVar[bool] = False
    removes_samples: ClassVar[bool] = False  # writes DECISIONS rows under decisions/
    needs: ClassVar[tuple[str, ...]] = ()  # provider stages ("embed", "cluster") that must run first
    seeded: ClassVar[bool] = False  # its output depends on the run seed, so the seed is in its config

    def needed(self, cfg: RunConfig) -> tuple[str, ...]:
        """The providers this stage needs in a run with `cfg` (by default `needs`; a stage whose
        needs depend on its config overrides this)."""
        return self.needs

    # per decision reason, what its `score` measures (the x axis of the report's histogram)
    score_labels: ClassVar[dict[str, str]] = {}

    def kept_scores(self, ctx: RunContext, kept: DataFrame) -> dict[str, DataFrame]:
        """Per decision reason, (sample_id, score) of the `kept` samples (sample_id, uid) under
        this stage's rule, where the rule scores a sample on its own (the report draws them beside
        the removed ones); none by default (e.g. a duplicate's score needs its pair)."""
        return {}

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
        return digest(*ctx.fingerprints.values(), *external)

    def execute(self, ctx: RunContext, out_dir: str) -> dict[str, Any]:
        """Do the work into `out_dir`; return counts for the manifest."""
        raise NotImplementedError

    def code_version(self) -> str:
        """The package version plus a hash of the code of every product module this stage's module
        imports, directly or not (schemas included): editing any of them reruns the stage."""
        return f"{pipeline.__version__}+{code_hash(type(self).__module__)[:12]}"

    def fingerprint(self, ctx: RunContext) -> tuple[str, str, str]:
        """(fingerprint, config hash, input fingerprint) of this stage in this run."""
        config_hash = digest(self.config_json(ctx.cfg))
        input_fp = self.input_fingerprint(ctx)
        return digest(self.name, self.code_version(), config_hash, input_fp), config_hash, input_fp

    def is_up_to_date(self, ctx: RunContext) -> bool:
        """A finished output with the fingerprint this run would give exists."""
        out_dir = ctx.stage_dir(self.name)
        if not io.exists(f"{out_dir}/{SUCCESS}"):
            return False
        return io.read_json(f"{out_dir}/{MANIFEST}").get("fingerprint") == self.fingerprint(ctx)[0]

    def run(self, ctx: RunContext, force: bool = False) -> dict[str, Any]:
        """Run unless a finished output with the same fingerprint exists; return the manifest."""
        out_dir = ctx.stage_dir(self.name)
        fp, config_hash, input_fp = self.fingerprint(ctx)
        manifest_path = f"{out_dir}/{MANIFEST}"
        if not force and self.is_up_to_date(ctx):
            log.info("stage %s: up to date, skipped", self.name)
            self.record(ctx, fp)
            return io.read_json(manifest_path)
        self._prepare(out_dir, fp, force)
        started = time.time()
        log.info("stage %s: running", self.name)
        try:
            counts = self.execute(ctx, out_dir)
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
        self.record(ctx, fp)
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

    def record(self, ctx: RunContext, fp: str) -> None:
        """Note in `ctx` that this stage is done with fingerprint `fp` (later stages build on it)."""
        ctx.fingerprints[self.name] = fp
        if self.removes_samples:
            ctx.decision_stages.append(self.name)

