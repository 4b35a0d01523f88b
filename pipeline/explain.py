"""`curate explain RUN_DIR SAMPLE_ID_OR_UID`: what each stage of a finished (or partial) run decided
about a sample, and why. Reads the run's Parquet tables with pyarrow only (no Spark): ingest's
SAMPLES row, the embed / dfn scores and cluster assignment when the run has them, then each decision
stage in the order the stages ran, and whether export wrote the sample."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

import pyarrow.dataset as ds

from pipeline.core import io
from pipeline.core.stage import MANIFEST

# Side tables shown when present: (label, folder under the run dir, columns).
FACTS = (
    ("embed", "embed/parts", ("clip_score",)),
    ("cluster", "cluster/assignments", ("cluster_id", "dist_to_centroid")),
    ("dfn", "dfn/scores/parts", ("score",)),
)


@dataclass
class Story:
    """One input row's path through a run."""

    sample: dict[str, Any]  # its SAMPLES row
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> values
    steps: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)  # (stage, decision or None)
    exported: bool | None = None  # None: the run has no finished export

    @property
    def outcome(self) -> str:
        if self.sample["quarantine_reason"] is not None:
            return f"quarantined at ingest ({self.sample['quarantine_reason']})"
        removed = next(((s, d) for s, d in self.steps if d is not None), None)
        if removed is not None:
            return f"removed by {removed[0]} ({removed[1]['reason']})"
        if self.exported:
            return "kept (exported)"
        return "kept" if self.exported is None else "alive, but not in the export"


def _rows(path: str, column: str, value: str, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows of the Parquet files under `path` (recursively) whose `column` equals `value`."""
    fs, p = io.filesystem(path)
    files = sorted(fs.glob(posixpath.join(p, "**", "*.parquet"))) if fs.isdir(p) else []
    if not files:
        return []
    dataset = ds.dataset(files, filesystem=fs, format="parquet")
    return dataset.to_table(columns=columns, filter=ds.field(column) == value).to_pylist()


def _stages_in_run_order(run_dir: str) -> list[str]:
    fs, root = io.filesystem(run_dir)
    found = []
    for entry in fs.ls(root, detail=False):
        manifest = posixpath.join(entry, MANIFEST)
        if fs.isdir(entry) and fs.exists(manifest):
            found.append((io.read_json(f"{run_dir.rstrip('/')}/{posixpath.basename(entry)}/{MANIFEST}")
                          .get("started_at", 0), posixpath.basename(entry)))
    return [name for _, name in sorted(found)]


def explain(run_dir: str, key: str) -> list[Story]:
    """The stories of the input rows whose sample_id or uid is `key` (several rows can share a uid)."""
    run_dir = run_dir.rstrip("/")
    samples = f"{run_dir}/ingest/parts"
    if not io.exists(samples):
        raise io.InputError(f"'{run_dir}' has no ingest table (is it a run directory?)")
    rows = _rows(samples, "sample_id", key) or _rows(samples, "uid", key)
    stages = _stages_in_run_order(run_dir)
    stories = []
    for row in sorted(rows, key=lambda r: r["sample_id"]):
        story = Story(sample=row)
        sid = row["sample_id"]
        for label, folder, columns in FACTS:
            found = _rows(f"{run_dir}/{folder}", "sample_id", sid, list(columns))
            if found:
                story.facts[label] = found[0]
        if row["quarantine_reason"] is None:
            for stage in stages:
                if not io.exists(f"{run_dir}/{stage}/decisions"):
                    continue
                decision = _rows(f"{run_dir}/{stage}/decisions", "sample_id", sid)
                story.steps.append((stage, decision[0] if decision else None))
                if decision:
                    break
            if "export" in stages:
                story.exported = bool(_rows(f"{run_dir}/export", "sample_id", sid, ["sample_id"]))
        stories.append(story)
    return stories


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def format_story(story: Story) -> str:
    """Human-readable lines for one story."""
    s = story.sample
    lines = [f"sample {s['sample_id']}  uid {s['uid']}",
             f"  source        {s['shard']} key {s['key']}",
             f"  caption       {s['caption']!r}",
             f"  image         {s['width']}x{s['height']} {s['image_ext']}"]
    if s["quarantine_reason"] is not None:
        lines.append(f"  ingest        quarantined: {s['quarantine_reason']}")
    else:
        lines.append("  ingest        usable")
    for label, values in story.facts.items():
        lines.append(f"  {label:<13} " + ", ".join(f"{k} {_fmt(v)}" for k, v in values.items()))
    for stage, decision in story.steps:
        if decision is None:
            lines.append(f"  {stage:<13} passed")
            continue
        detail = [f"removed: {decision['reason']}"]
        if decision["score"] is not None:
            detail.append(f"score {_fmt(decision['score'])}")
        if decision["matched_sample_id"] or decision["matched_uid"]:
            detail.append(f"matches {decision['matched_sample_id'] or decision['matched_uid']}")
        lines.append(f"  {stage:<13} " + ", ".join(detail))
    lines.append(f"  => {story.outcome}")
    return "\n".join(lines)
