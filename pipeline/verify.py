"""`curate verify RUN_DIR`: re-read every output shard and check it against what export recorded.

Per shard: the tar's byte size and sha256 equal the manifest's, the tar reads to its end-of-archive
marker, every sample has one image member (jpg/png/webp: `imaging.OUTPUT_EXTS`), a `.txt` and a `.json`, the image bytes'
sha256 is the sample's uid, the caption is the `.txt`, the sample count equals the manifest's and
`sizes.json`'s, and the shard's Parquet rows are its `.json` records (same keys, uids and sample
ids, in order). Across shards: every uid and every sample_id appears exactly once, the total equals
the stage manifest's and the ledger's `kept`, and the output `manifest.json` (when there is one)
lists the same shards, sizes and hashes. Each problem names the shard (or file) and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from pipeline.core import io
from pipeline.core.stage import MANIFEST, SUCCESS
from pipeline.core.tars import TarSample, iter_tar_samples
from pipeline.imaging import OUTPUT_EXTS

ROW_ID = ("key", "uid", "sample_id")  # what ties a Parquet row to its sample in the tar
SHARD_FIELDS = ("shard", "count", "bytes", "sha256")
_CHUNK = 1 << 20


@dataclass
class VerifyReport:
    """What `verify_run` read, and every problem it found (empty when the output is intact)."""

    export_dir: str
    shards: int = 0
    samples: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        state = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        return f"{self.export_dir}: {self.shards} shards, {self.samples} samples, {self.bytes} bytes: {state}"


def _sha256_file(path: str) -> tuple[str, int]:
    fs, p = io.filesystem(path)
    h, size = hashlib.sha256(), 0
    with fs.open(p, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _sample_problems(sample: TarSample) -> tuple[dict[str, Any] | None, list[str]]:
    """The sample's `.json` record and what is wrong with the sample itself."""
    name = f"sample {sample.key}"
    images = [ext for ext in OUTPUT_EXTS if ext in sample.members]
    expected = {*images, "txt", "json"}
    if len(images) != 1 or set(sample.members) != expected or any(m.data is None for m in sample.members.values()):
        return None, [f"{name}: members {sorted(sample.members)}, expected one image, txt and json"]
    try:
        record = json.loads(sample.members["json"].data)
    except ValueError as err:
        return None, [f"{name}: unreadable .json ({err})"]
    if not isinstance(record, dict):
        return None, [f"{name}: .json is not an object"]
    problems = []
    image = sample.members[images[0]].data
    if hashlib.sha256(image).hexdigest() != record.get("uid"):
        problems.append(f"{name}: image sha256 != uid {record.get('uid')}")
    if record.get("key") != sample.key or record.get("image_ext") != images[0]:
        problems.append(f"{name}: .json key/image_ext {record.get('key')}/{record.get('image_ext')} "
                        "do not match the tar")
    if sample.members["txt"].data.decode("utf-8", "replace") != (record.get("caption") or ""):
        problems.append(f"{name}: .txt differs from the caption in .json")
    return record, problems


def verify_shard(export_dir: str, entry: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Check one output shard against its manifest entry; return its `.json` records and problems."""
    tar_name = entry["shard"]
    tar_path = f"{export_dir}/{tar_name}"
    if not io.exists(tar_path):
        return [], [f"{tar_name}: missing"]
    problems = []
    sha, size = _sha256_file(tar_path)
    if size != entry["bytes"]:
        problems.append(f"{tar_name}: {size} bytes, manifest says {entry['bytes']}")
    if sha != entry["sha256"]:
        problems.append(f"{tar_name}: sha256 {sha} != manifest {entry['sha256']}")
    records = []
    fs, p = io.filesystem(tar_path)
    with fs.open(p, "rb") as f:
        for item in iter_tar_samples(f, max_member_bytes=entry["bytes"]):
            if isinstance(item, str):
                problems.append(f"{tar_name}: unreadable tar ({item})")
                continue
            record, sample_problems = _sample_problems(item)
            problems += [f"{tar_name}: {problem}" for problem in sample_problems]
            if record is not None:
                records.append(record)
    if len(records) != entry["count"]:
        problems.append(f"{tar_name}: {len(records)} readable samples, manifest says {entry['count']}")
    parquet_path = tar_path[: -len(".tar")] + ".parquet"
    try:
        pfs, pp = io.filesystem(parquet_path)
        rows = pq.read_table(pp, filesystem=pfs, columns=list(ROW_ID)).to_pylist()
    except Exception as err:  # missing or garbled: reported, the other shards still checked
        problems.append(f"{posixpath.basename(parquet_path)}: unreadable ({type(err).__name__}: {err})")
    else:
        if rows != [{c: r.get(c) for c in ROW_ID} for r in records]:
            problems.append(f"{posixpath.basename(parquet_path)}: {len(rows)} rows are not the tar's "
                            f"{len(records)} samples (key, uid, sample_id in order)")
    return records, problems


def _read_json(path: str, report: VerifyReport) -> Any:
    try:
        return io.read_json(path)
    except (OSError, ValueError) as err:
        report.problems.append(f"{posixpath.basename(path)}: unreadable ({type(err).__name__}: {err})")
        return None


def verify_run(run_dir: str) -> VerifyReport:
    """Re-read all of `<run_dir>/export` and check it against the manifest, sizes.json and ledger."""
    export_dir = f"{run_dir.rstrip('/')}/export"
    report = VerifyReport(export_dir)
    if not io.exists(f"{export_dir}/{SUCCESS}"):
        report.problems.append(f"{export_dir}: export is not finished (no {SUCCESS})")
        return report
    manifest = _read_json(f"{export_dir}/{MANIFEST}", report)
    if manifest is None:
        return report
    entries = manifest["counts"]["shards"]
    if io.exists(f"{export_dir}/manifest.json"):
        output = _read_json(f"{export_dir}/manifest.json", report) or {}
        listed = [tuple(e.get(f) for f in SHARD_FIELDS) for e in output.get("shards", [])]
        if listed != [tuple(e[f] for f in SHARD_FIELDS) for e in entries]:
            report.problems.append("manifest.json: its shards, counts, sizes or hashes differ from the stage's")
    sizes = _read_json(f"{export_dir}/sizes.json", report)
    if sizes is not None and sizes != {e["shard"]: e["count"] for e in entries}:
        report.problems.append("sizes.json: does not match the manifest's shard counts")
    fs, root = io.filesystem(export_dir)
    on_disk = {posixpath.basename(p) for p in fs.glob(posixpath.join(root, "*.tar"))}
    for extra in sorted(on_disk - {e["shard"] for e in entries}):
        report.problems.append(f"{extra}: not in the manifest")
    owners: dict[str, dict[str, str]] = {"uid": {}, "sample_id": {}}
    for entry in entries:
        records, problems = verify_shard(export_dir, entry)
        report.problems += problems
        report.shards += 1
        report.samples += len(records)
        report.bytes += entry["bytes"]
        for record in records:
            for column, seen in owners.items():
                value = record.get(column)
                if value in seen:
                    report.problems.append(f"{entry['shard']}: {column} {value} also in {seen[value]}")
                seen[value] = entry["shard"]
    kept = manifest["counts"]["kept"]
    if report.samples != kept:
        report.problems.append(f"{export_dir}: {report.samples} samples, manifest says kept {kept}")
    ledger = _read_json(f"{run_dir.rstrip('/')}/ledger.json", report)
    if ledger is not None and ledger.get("kept") != kept:
        report.problems.append(f"ledger.json: kept {ledger.get('kept')} != export's {kept}")
    return report
