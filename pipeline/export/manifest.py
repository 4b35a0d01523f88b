"""`export/manifest.json`: the output's shard list with checksums, and where it came from.

Everything in it is relative to the export folder and independent of the run folder, so two runs of
the same config on the same input (embedded or on a cluster) write the same bytes.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.core.config import RunConfig
from pipeline.core.stage import digest

# Sections that say where and how a run executes, not what it outputs.
NOT_OUTPUT_SETTINGS = ("run_dir", "spark")


def output_config_hash(cfg: RunConfig) -> str:
    """sha256 of the resolved config without the run folder and Spark settings."""
    settings = {k: v for k, v in cfg.to_dict().items() if k not in NOT_OUTPUT_SETTINGS}
    return digest(json.dumps(settings, sort_keys=True, default=str))


def output_manifest(
    stats: list[dict[str, Any]], pattern: str, cfg: RunConfig, input_fingerprint: str, stages: dict[str, str]
) -> dict[str, Any]:
    """The manifest of an export: `stats` are the shards' `_stats.json` contents in shard order,
    `pattern` the brace pattern relative to the export folder, `stages` the fingerprints of the
    stages that produced it (stage -> fingerprint, in run order)."""
    return {
        "format": "webdataset",
        "pattern": pattern,
        "count": sum(s["count"] for s in stats),
        "bytes": sum(s["bytes"] for s in stats),
        "shards": [{**s, "parquet": s["shard"].replace(".tar", ".parquet")} for s in stats],
        "sizes": "sizes.json",
        "config_hash": output_config_hash(cfg),
        "input_fingerprint": input_fingerprint,
        "stage_fingerprints": dict(stages),
    }
