"""An img2dataset shard (tar + parquet) -> SAMPLES rows: the reader of the ingest stage, also used
for evaluation sets so that they get the same uid and pHash. Every input row ends as a usable
sample or as a quarantined one with a reason; nothing is dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from pipeline.core import io
from pipeline.core.config import IngestConfig
from pipeline.core.tars import TarSample, iter_tar_samples
from pipeline.imaging import ImageRejected, probe_image
from schemas import SAMPLES

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


@dataclass(frozen=True)
class ShardTask:
    path: str  # the tar
    name: str  # short stable name used in sample ids, e.g. "00000"

    @property
    def part_name(self) -> str:
        return self.name.replace("/", "__")


def _index_parquet(tar_path: str) -> tuple[dict[str, dict[str, Any]], str | None]:
    """img2dataset's per-shard parquet, by key; (rows, error). A missing parquet is not an error."""
    path = tar_path[: -len(".tar")] + ".parquet"
    if not io.exists(path):
        return {}, None
    try:
        fs, p = io.filesystem(path)
        table = pq.read_table(p, filesystem=fs)
        cols = [c for c in ("key", "status", "caption", "url", "error_message") if c in table.column_names]
        rows = table.select(cols).to_pylist()
    except Exception as err:  # an unreadable parquet must not lose the tar's samples
        return {}, f"{type(err).__name__}: {err}"
    return {str(r["key"]): r for r in rows if r.get("key") is not None}, None


def _caption(sample: TarSample, cfg: IngestConfig) -> tuple[str | None, str | None]:
    """(caption, quarantine reason) from the .txt member."""
    member = sample.members.get("txt")
    if member is None:
        return None, None
    if member.data is None or member.size > 4 * cfg.max_caption_chars:
        return None, "caption_too_long"
    try:
        text = member.data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "caption_not_utf8"
    if len(text) > cfg.max_caption_chars:
        return None, "caption_too_long"
    return text, None


def _url(sample: TarSample) -> str | None:
    member = sample.members.get("json")
    if member is None or member.data is None:
        return None
    try:
        meta = json.loads(member.data)
    except ValueError:
        return None
    url = meta.get("url") if isinstance(meta, dict) else None
    return url if isinstance(url, str) else None


def sample_row(task: ShardTask, sample: TarSample, sample_id: str, cfg: IngestConfig) -> dict[str, Any]:
    """One SAMPLES row for a sample read from a tar, with a quarantine reason if it is unusable."""
    row: dict[str, Any] = {name: None for name in SAMPLES.names}
    row.update(sample_id=sample_id, shard=task.path, shard_name=task.name, key=sample.key, url=_url(sample))
    reason = sample.problem
    ext = next((e for e in IMAGE_EXTS if e in sample.members), None)
    if ext is not None:
        image = sample.members[ext]
        row.update(image_ext=ext, image_offset=image.offset, image_bytes=image.size)
        if image.data is None:
            reason = reason or "image_too_large"
        else:
            row["uid"] = hashlib.sha256(image.data).hexdigest()
            if reason is None:
                try:
                    info = probe_image(image.data, cfg.max_pixels)
                    row.update(width=info.width, height=info.height, phash=info.phash)
                except ImageRejected as err:
                    reason = err.reason
    elif reason is None:
        reason = "no_image"
    caption, caption_problem = _caption(sample, cfg)
    row["caption"] = caption
    row["quarantine_reason"] = reason or caption_problem
    return row


def _missing_row(task: ShardTask, key: str, meta: dict[str, Any], tar_cut: bool) -> dict[str, Any]:
    """A parquet row whose sample is not in the tar: never downloaded, or lost from the tar (in the
    part of it cut off when the tar is truncated or corrupt, `tar_cut`)."""
    row: dict[str, Any] = {name: None for name in SAMPLES.names}
    status = meta.get("status")
    lost = "truncated_shard" if tar_cut else "missing_from_tar"
    reason = lost if status in (None, "success") else str(status)
    caption = meta.get("caption")
    row.update(
        sample_id=f"{task.name}/{key}",
        shard=task.path,
        shard_name=task.name,
        key=key,
        caption=caption if isinstance(caption, str) else None,
        url=meta.get("url") if isinstance(meta.get("url"), str) else None,
        quarantine_reason=reason,
    )
    return row


def read_shard(task: ShardTask, cfg: IngestConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All rows of one shard (tar samples + parquet-only rows) and the shard's stats."""
    expected, parquet_error = _index_parquet(task.path)
    rows: list[dict[str, Any]] = []
    seen: Counter[str] = Counter()
    tar_error = None
    fs, p = io.filesystem(task.path)
    with fs.open(p, "rb") as f:
        for item in iter_tar_samples(f, max_member_bytes=cfg.max_image_bytes):
            if isinstance(item, str):
                tar_error = item
                continue
            seen[item.key] += 1
            sample_id = f"{task.name}/{item.key}"
            if seen[item.key] > 1:
                sample_id = f"{sample_id}#{seen[item.key]}"
                item.problem = item.problem or "duplicate_key"
            rows.append(sample_row(task, item, sample_id, cfg))
    cut = tar_error is not None
    rows.extend(_missing_row(task, k, expected[k], cut) for k in sorted(expected) if k not in seen)
    reasons = Counter(r["quarantine_reason"] for r in rows if r["quarantine_reason"])
    stats = {
        "shard": task.name,
        "path": task.path,
        "input": len(rows),
        "ok": len(rows) - sum(reasons.values()),
        "quarantined": dict(sorted(reasons.items())),
        "tar_error": tar_error,
        "parquet_error": parquet_error,
        "parquet_rows": len(expected),
    }
    return rows, stats
