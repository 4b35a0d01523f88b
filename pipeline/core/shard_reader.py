"""An img2dataset shard (tar + parquet) -> SAMPLES rows: the reader of the ingest stage, also used
for evaluation sets so that they get the same uid and pHash.

The input is the shard's distinct samples: its tar samples (grouped by key as webdataset keys
members, `core/tars.py`), plus the rows of its img2dataset parquet that have no sample in the tar
(matched on `tars.match_key`). Every one ends as a usable sample or as a quarantined one with a
reason; nothing is dropped.
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
from pipeline.core.tars import TarSample, iter_tar_samples, match_key
from pipeline.imaging import ImageRejected, probe_image
from schemas import SAMPLES


@dataclass(frozen=True)
class ShardTask:
    path: str  # the tar
    name: str  # short stable name used in sample ids, e.g. "00000"

    @property
    def part_name(self) -> str:
        return io.part_name(self.name)


@dataclass
class ParquetIndex:
    """img2dataset's per-shard parquet: rows by match key, rows that cannot be matched (no key),
    and what went wrong reading it."""

    by_key: dict[str, list[dict[str, Any]]]
    keyless: list[dict[str, Any]]
    rows: int = 0
    error: str | None = None


def _index_parquet(tar_path: str) -> ParquetIndex:
    """The parquet beside the tar (a missing parquet is not an error). An unreadable one, or one
    without a `key` column, is reported as `error`; it never loses the tar's samples."""
    path = tar_path[: -len(".tar")] + ".parquet"
    if not io.exists(path):
        return ParquetIndex({}, [])
    try:
        fs, p = io.filesystem(path)
        table = pq.read_table(p, filesystem=fs)
        rows = table.to_pylist()
    except Exception as err:  # an unreadable parquet must not lose the tar's samples
        return ParquetIndex({}, [], error=f"{type(err).__name__}: {err}")
    index = ParquetIndex({}, [], rows=len(rows))
    for row in rows:
        key = row.get("key")
        if key is None:
            index.keyless.append(row)
        else:
            index.by_key.setdefault(match_key(str(key)), []).append({**row, "key": str(key)})
    if "key" not in table.column_names:
        index.error = f"no 'key' column: its {len(rows)} rows cannot be matched to the tar's samples"
    elif index.keyless:
        index.error = f"{len(index.keyless)} rows without a key cannot be matched to the tar's samples"
    return index


def _caption(sample: TarSample, cfg: IngestConfig) -> tuple[str | None, str | None]:
    """(caption, quarantine reason) from the .txt member."""
    member = sample.field("txt")
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


def _json_fields(sample: TarSample) -> dict[str, Any]:
    """The fields of the sample's .json member ({} when it has none or it is not a JSON object)."""
    member = sample.field("json")
    if member is None or member.data is None:
        return {}
    try:
        meta = json.loads(member.data)
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def source_json(parquet_row: dict[str, Any] | None, json_fields: dict[str, Any]) -> str | None:
    """The sample's source metadata as one JSON object: its parquet row's columns, then its .json
    member's fields (which win where both name a field); None when there is neither. Values JSON
    cannot hold (bytes, timestamps) are written as their string form."""
    merged = {**(parquet_row or {}), **json_fields}
    return json.dumps(merged, sort_keys=True, default=str, ensure_ascii=False) if merged else None


def sample_row(task: ShardTask, sample: TarSample, sample_id: str, cfg: IngestConfig,
               parquet_row: dict[str, Any] | None = None) -> dict[str, Any]:
    """One SAMPLES row for a sample read from a tar (`parquet_row`: its row in the shard's parquet),
    with a quarantine reason if it is unusable."""
    row: dict[str, Any] = {name: None for name in SAMPLES.names}
    fields = _json_fields(sample)
    url = fields.get("url")
    row.update(sample_id=sample_id, shard=task.path, shard_name=task.name, key=sample.key,
               url=url if isinstance(url, str) else None, source=source_json(parquet_row, fields))
    reason = sample.problem
    found = sample.image()
    if found is not None:
        ext, image = found
        row.update(image_ext=ext, image_offset=image.offset, image_bytes=image.size)
        if image.data is None:
            reason = reason or "image_too_large"
        else:
            row["uid"] = hashlib.sha256(image.data).hexdigest()
            if reason is None:
                try:
                    info = probe_image(image.data, cfg.max_pixels, cfg.max_aspect)
                    row.update(width=info.width, height=info.height, phash=info.phash)
                except ImageRejected as err:
                    reason = err.reason
    elif reason is None:
        reason = "no_image"
    caption, caption_problem = _caption(sample, cfg)
    row["caption"] = caption
    row["quarantine_reason"] = reason or caption_problem
    return row


def _listed_row(task: ShardTask, sample_id: str, key: str, meta: dict[str, Any], tar_cut: bool) -> dict[str, Any]:
    """A parquet row whose sample is not in the tar: never downloaded (its status), or lost from
    the tar (`missing_from_tar`; `truncated_shard` when the tar is cut short or corrupt, `tar_cut`)."""
    row: dict[str, Any] = {name: None for name in SAMPLES.names}
    status = meta.get("status")
    lost = "truncated_shard" if tar_cut else "missing_from_tar"
    reason = lost if status in (None, "success") else str(status)
    caption = meta.get("caption")
    row.update(
        sample_id=sample_id,
        shard=task.path,
        shard_name=task.name,
        key=key,
        caption=caption if isinstance(caption, str) else None,
        url=meta.get("url") if isinstance(meta.get("url"), str) else None,
        quarantine_reason=reason,
        source=source_json(meta, {}),
    )
    return row


def _listed_only(task: ShardTask, index: ParquetIndex, matched: set[str], tar_cut: bool) -> list[dict[str, Any]]:
    """Rows for the parquet's samples that are not in the tar. Keyed rows no tar sample matched are
    each one sample (`<shard>/<key>`, `#2`... for a repeated key); a row without a key can only be
    told apart from the tar's samples by a failure status, so those rows are samples
    (`<shard>/row.<i>`: a tar key never has a dot there) and the others are taken to be in the tar."""
    rows = []
    seen: Counter[str] = Counter()
    for mkey in sorted(k for k in index.by_key if k not in matched):
        for meta in index.by_key[mkey]:
            seen[meta["key"]] += 1
            n = seen[meta["key"]]
            sample_id = f"{task.name}/{meta['key']}" + (f"#{n}" if n > 1 else "")
            rows.append(_listed_row(task, sample_id, meta["key"], meta, tar_cut))
    for i, meta in enumerate(index.keyless):
        if meta.get("status") not in (None, "success"):
            rows.append(_listed_row(task, f"{task.name}/row.{i}", f"row.{i}", meta, tar_cut))
    return rows


def read_shard(task: ShardTask, cfg: IngestConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All rows of one shard (tar samples + parquet-only rows) and the shard's stats."""
    index = _index_parquet(task.path)
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
            listed = index.by_key.get(match_key(item.key))
            rows.append(sample_row(task, item, sample_id, cfg, listed[0] if listed else None))
    rows.extend(_listed_only(task, index, {match_key(k) for k in seen}, tar_error is not None))
    reasons = Counter(r["quarantine_reason"] for r in rows if r["quarantine_reason"])
    stats = {
        "shard": task.name,
        "path": task.path,
        "input": len(rows),
        "ok": len(rows) - sum(reasons.values()),
        "quarantined": dict(sorted(reasons.items())),
        "tar_error": tar_error,
        "parquet_error": index.error,
        "parquet_rows": index.rows,
    }
    return rows, stats


def shard_tasks(input_spec: str) -> list[ShardTask]:
    """One task per input tar; InputError if there is none, or if two shards would write the same
    part file (compared case-blind, as some file systems do)."""
    paths = io.list_shards(input_spec)
    tasks = [ShardTask(path, name) for path, name in io.shard_names(paths).items()]
    owners: dict[str, list[str]] = {}
    for task in tasks:
        owners.setdefault(task.part_name.casefold(), []).append(task.path)
    for part, clash in sorted(owners.items()):
        if len(clash) > 1:
            raise io.InputError(f"input shards {', '.join(clash)} would share the part name '{part}'; rename one")
    return tasks
