"""What a stage gets from the run it is part of: the config, Spark, the run's stage list and every
stage's fingerprint. Nothing in it changes while the run goes on: the runner builds it once
(`pipeline.core.stage.run_context`) and each stage sees it through `for_stage`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pyspark.sql import SparkSession

from pipeline.core import io
from pipeline.core.config import RunConfig

MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"


@dataclass(frozen=True)
class RunContext:
    """The run as a stage sees it. `order` is the run's stage list and `decision_stages` those of
    them that remove samples, both in run order; `fingerprints` holds every stage of the run;
    `current` names the stage this context was handed to (None: after the run, for the ledger and
    the report). A context without `order` runs stages that read no earlier decisions only."""

    cfg: RunConfig
    spark: SparkSession
    order: tuple[str, ...] = ()
    decision_stages: tuple[str, ...] = ()
    fingerprints: Mapping[str, str] = field(default_factory=dict)
    current: str | None = None

    def __post_init__(self) -> None:
        io.use_storage(self.cfg.storage_options.by_protocol(), self.spark)  # for the driver and every task

    def for_stage(self, name: str) -> RunContext:
        """This context as stage `name` sees it."""
        return replace(self, current=name)

    def earlier(self) -> tuple[str, ...]:
        """The stages of the run before the current one (all of them after the run)."""
        if self.current is None:
            return self.order
        if self.current not in self.order:
            return ()
        return self.order[: self.order.index(self.current)]

    def earlier_decisions(self) -> tuple[str, ...]:
        """The decision stages before the current one, in run order: the pool it sees is what they kept."""
        if self.current is not None and self.order and self.current not in self.order:
            raise ValueError(f"stage '{self.current}' is not one of this run's stages ({', '.join(self.order)})")
        earlier = set(self.earlier())
        return tuple(name for name in self.decision_stages if name in earlier)

    def stage_dir(self, name: str) -> str:
        return f"{self.cfg.run_dir.rstrip('/')}/{name}"

    def manifest(self, name: str) -> dict[str, Any]:
        return io.read_json(f"{self.stage_dir(name)}/{MANIFEST}")
