"""What a stage gets from the run it is part of: the config, Spark, and where the run's folders are."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession

from pipeline.core import io
from pipeline.core.config import RunConfig

MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"


@dataclass
class RunContext:
    """What a stage needs from the run: config, Spark, and the fingerprints of stages already done."""

    cfg: RunConfig
    spark: SparkSession
    fingerprints: dict[str, str] = field(default_factory=dict)
    decision_stages: list[str] = field(default_factory=list)  # in run order, those finished so far

    def __post_init__(self) -> None:
        io.use_storage(self.cfg.storage_options.by_protocol(), self.spark)  # for the driver and every task

    def stage_dir(self, name: str) -> str:
        return f"{self.cfg.run_dir.rstrip('/')}/{name}"

    def manifest(self, name: str) -> dict[str, Any]:
        return io.read_json(f"{self.stage_dir(name)}/{MANIFEST}")
