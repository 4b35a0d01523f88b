"""Runs the stages of a config in order; each skips itself when its output is up to date."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import yaml

from pipeline.core import io
from pipeline.core.config import ConfigError, RunConfig
from pipeline.core.failures import rearm_interrupts
from pipeline.core.ledger import write_ledger
from pipeline.core.lock import run_lock
from pipeline.core.runlog import LOGS, run_log
from pipeline.core.shard_reader import shard_tasks
from pipeline.core.redact import redacted
from pipeline.core.spark import get_spark, require_hadoop_filesystem
from pipeline.core.stage import MANIFEST, SUCCESS, RunContext, Stage, run_context
from pipeline.core.tables import CATALOG
from pipeline.report import build_report
from pipeline.stages.basic_filter import BasicFilter
from pipeline.stages.cluster import Cluster
from pipeline.stages.dbp import Dbp
from pipeline.stages.decontaminate import Decontaminate
from pipeline.stages.dfn import Dfn
from pipeline.stages.embed import Embed
from pipeline.stages.exact_dedup import ExactDedup
from pipeline.stages.export import Export
from pipeline.stages.image_based import ImageBased
from pipeline.stages.ingest import Ingest
from pipeline.stages.phash_dedup import PhashDedup
from pipeline.stages.random_prune import RandomPrune
from pipeline.stages.semdedup import SemDedup
from pipeline.stages.ssp import Ssp

log = logging.getLogger("curate")


# Steps a config may name in `steps`, in the order it wants them (each removes samples with reasons).
STEPS: dict[str, type[Stage]] = {
    stage.name: stage
    for stage in (BasicFilter, ExactDedup, PhashDedup, SemDedup, Decontaminate, Dbp, Ssp, RandomPrune, Dfn, ImageBased)
}

# Stages that write tables steps read; inserted before the first step that reads one of them.
PROVIDERS: dict[str, type[Stage]] = {"embed": Embed, "cluster": Cluster}


def providers_of(stage: Stage, cfg: RunConfig) -> tuple[str, ...]:
    """The provider stages that write a table `stage` reads in a run with `cfg`, in read order."""
    writers = (CATALOG[name].stage for name in stage.reads_in(cfg) if name in CATALOG)
    return tuple(dict.fromkeys(name for name in writers if name in PROVIDERS))


def pipeline_stages(cfg: RunConfig) -> list[Stage]:
    """The stages of a run, in order: ingest, the configured steps (with embed and cluster put in
    before the first step that reads their tables, or before export when only enabled), export;
    each stage's config checked as that of a stage that runs."""
    unknown = [name for name in cfg.steps if name not in STEPS]
    if unknown:
        raise ConfigError(f"config key 'steps': unknown step(s) {unknown} (known: {', '.join(sorted(STEPS))})")
    stages: list[Stage] = [Ingest()]
    provided: set[str] = set()

    def provide(names: tuple[str, ...]) -> None:
        for name in names:
            if name in provided:
                continue
            provider = PROVIDERS[name]()
            provide(providers_of(provider, cfg))
            provided.add(name)
            stages.append(provider)

    for name in cfg.steps:
        step = STEPS[name]()
        provide(providers_of(step, cfg))
        stages.append(step)
    provide(tuple(name for name in PROVIDERS if getattr(cfg, name).enabled))
    stages.append(Export())
    for stage in stages:
        stage.check_config(cfg)
    return stages


@dataclass
class RunResult:
    manifests: dict[str, dict[str, Any]]
    ledger: dict[str, Any]
    export_dir: str
    pattern: str
    report: str = ""  # <run_dir>/report.html


def start(cfg: RunConfig, stages: list[Stage]) -> RunContext:
    """The context of a run of `stages`, with its Spark session, once Spark is known to open
    `run_dir` (nothing is written before)."""
    spark = get_spark(cfg.spark)
    rearm_interrupts()  # Spark replaced the SIGINT handler
    require_hadoop_filesystem(spark, cfg.run_dir, "run_dir")
    return run_context(cfg, spark, stages)


def save_resolved_config(cfg: RunConfig) -> None:
    """`<run_dir>/config.yaml`, with secret values (S3 keys, tokens in `spark.conf`) redacted."""
    resolved = yaml.safe_dump(redacted(cfg.to_dict()), sort_keys=True)
    io.write_bytes_atomic(f"{cfg.run_dir}/config.yaml", resolved.encode())


def run_pipeline(cfg: RunConfig, force: bool = False) -> RunResult:
    """Run every stage (skipping those up to date), write and check the ledger, write the report."""
    io.use_storage(cfg.storage_options.by_protocol())
    shard_tasks(cfg.input)  # fail on an empty input, clashing shard names or steps before Spark starts
    stages = pipeline_stages(cfg)
    with run_log(cfg.run_dir), run_lock(cfg.run_dir):
        ctx = start(cfg, stages)
        save_resolved_config(cfg)
        manifests = {stage.name: stage.run(ctx, force=force) for stage in stages}
        export = manifests["export"]["counts"]
        ledger = write_ledger(ctx, export["kept"])
        report = build_report(ctx, stages, manifests, ledger)
    return RunResult(manifests, ledger, ctx.stage_dir("export"), export["pattern"], report)


@dataclass(frozen=True)
class PlannedStage:
    """What `curate run` would do with one stage: run it, or skip it as up to date."""

    name: str
    action: str  # "run" | "skip"
    fingerprint: str


def plan_pipeline(cfg: RunConfig) -> list[PlannedStage]:
    """The stages a run of `cfg` would run and skip, from the config, the inputs and the run dir's
    manifests alone: no Spark session, nothing written."""
    io.list_shards(cfg.input)
    stages = pipeline_stages(cfg)
    ctx = run_context(cfg, None, stages)  # type: ignore[arg-type]  # planning reads no table
    return [PlannedStage(s.name, "skip" if s.is_up_to_date(ctx) else "run", ctx.fingerprints[s.name]) for s in stages]


def run_until(cfg: RunConfig, last: str) -> RunContext:
    """Run the stages of `cfg` up to and including `last` (skipping those up to date); the run's
    context, from which the tables they wrote can be read."""
    stages = pipeline_stages(cfg)
    names = [s.name for s in stages]
    if last not in names:
        raise ConfigError(f"stage '{last}' is not part of this run (stages: {', '.join(names)})")
    ctx = run_context(cfg, get_spark(cfg.spark), stages)
    for stage in stages[: names.index(last) + 1]:
        stage.run(ctx)
    return ctx


def run_one_stage(cfg: RunConfig, name: str) -> dict[str, Any]:
    """Rerun one stage from the tables of the stages before it, which must be finished and up to
    date (they are checked, not run)."""
    stages = pipeline_stages(cfg)
    names = [s.name for s in stages]
    if name not in names:
        raise ConfigError(f"unknown stage '{name}' (stages of this config: {', '.join(names)})")
    with run_log(cfg.run_dir), run_lock(cfg.run_dir):
        ctx = start(cfg, stages)
        for stage in stages[: names.index(name)]:
            if not stage.is_up_to_date(ctx):
                raise io.InputError(f"stage '{stage.name}' is not done or out of date: run `curate run` first")
        return stages[names.index(name)].run(ctx, force=True)


def run_status(run_dir: str) -> list[dict[str, Any]]:
    """Per stage folder, in the order they ran: finished or not, counts and seconds."""
    fs, root = io.filesystem(run_dir)
    if not fs.isdir(root):
        raise io.InputError(f"run dir '{run_dir}' does not exist")
    rows: list[dict[str, Any]] = []
    for entry in sorted(fs.ls(root, detail=False)):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if not fs.isdir(entry) or name == LOGS:
            continue
        done = fs.exists(f"{entry}/{SUCCESS}")
        manifest = io.read_json(f"{run_dir}/{name}/{MANIFEST}") if done else {}
        rows.append({"stage": name, "done": done, "seconds": manifest.get("seconds"),
                     "counts": manifest.get("counts"), "started_at": manifest.get("started_at")})
    return sorted(rows, key=lambda r: (r["started_at"] is None, r["started_at"] or 0, r["stage"]))
