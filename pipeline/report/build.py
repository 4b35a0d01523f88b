"""Build `<run_dir>/report.json` (the numbers) and `<run_dir>/report.html` (the same, plotted)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pipeline.core import io
from pipeline.core.stage import RunContext, Stage
from pipeline.report.data import (
    clip_scores,
    cluster_numbers,
    decision_scores,
    duplicate_groups,
    ledger_flow,
    sample_statistics,
    stage_times,
    thumbnail_rows,
)
from pipeline.report.page import render
from pipeline.report.thumbs import thumbnails

log = logging.getLogger("curate")

REPORT_HTML = "report.html"
REPORT_JSON = "report.json"


def _group_order(decision_stages: Sequence[str]) -> Any:
    """Sort key of thumbnail groups: kept, then each step's reasons in run order, then quarantined."""
    order = {name: i for i, name in enumerate(decision_stages)}

    def key(group: str) -> tuple:
        if group == "kept":
            return (0, 0, "")
        stage, reason = group.split(": ", 1)
        return (2, 0, reason) if stage == "quarantined" else (1, order.get(stage, len(order)), reason)

    return key


def report_data(ctx: RunContext, stages: Sequence[Stage], manifests: dict[str, dict[str, Any]],
                ledger: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[str | None]]]:
    """(report.json's content, thumbnail data URIs by group) of a finished run."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in thumbnail_rows(ctx, ledger):
        groups.setdefault(row["group"], []).append(row)
    groups = {g: groups[g] for g in sorted(groups, key=_group_order(ctx.decision_stages))}
    images = {g: thumbnails(rows, ctx.cfg.ingest.max_pixels) for g, rows in groups.items()}
    export = io.read_json(f"{ctx.stage_dir('export')}/manifest.json")
    data = {
        "run_dir": ctx.cfg.run_dir,
        "input": ctx.cfg.input,
        "ledger": ledger,
        "flow": ledger_flow(ledger, ctx.decision_stages),
        "stages": stage_times(stages, manifests, ledger),
        "clusters": cluster_numbers(ctx),
        "clip_score": clip_scores(ctx),
        "scores": decision_scores(ctx, stages),
        "duplicates": duplicate_groups(ctx),
        "samples": sample_statistics(ctx),
        "export": {"shards": len(export["shards"]), "count": export["count"], "bytes": export["bytes"],
                   "pattern": export["pattern"], "config_hash": export["config_hash"]},
        "thumbnails": {
            g: [{"sample_id": r["sample_id"], "caption": r["caption"], "score": r["score"], "has_image": uri is not None}
                for r, uri in zip(rows, images[g])]
            for g, rows in groups.items()
        },
    }
    return data, images


def build_report(ctx: RunContext, stages: Sequence[Stage], manifests: dict[str, dict[str, Any]],
                 ledger: dict[str, Any]) -> str:
    """Write report.json and report.html into the run folder; return the page's path."""
    ctx.spark.sparkContext.setJobDescription("report")
    data, images = report_data(ctx, stages, manifests, ledger)
    run_dir = ctx.cfg.run_dir.rstrip("/")
    io.write_json_atomic(f"{run_dir}/{REPORT_JSON}", data)
    path = f"{run_dir}/{REPORT_HTML}"
    io.write_bytes_atomic(path, render(data, images).encode())
    log.info("report: %s", path)
    return path
