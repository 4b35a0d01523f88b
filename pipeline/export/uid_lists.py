"""The curated subset as id lists, written under `export/subset/` (not beside the shards, so that
globs over the shards' `*.parquet` see shards only).

`uids.parquet`: the content uids (sha256 of the image bytes) of every exported sample, sorted, one
column `uid`. `uids.npy`: when the source carries DataComp-style uids (a `uid` column in its
parquet or `.json`, 32 hex digits), those of the exported samples as DataComp's tooling exchanges
subsets: a sorted, de-duplicated array of (u8, u8) pairs, the uid's high and low 64 bits.
Both are streamed from Spark in sorted order (`toLocalIterator`), so the driver holds one partition
of strings at a time and, for `uids.npy`, 16 bytes per sample.
"""

from __future__ import annotations

import io as pyio
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.core import io

SUBSET_DIR = "subset"
UIDS_PARQUET = f"{SUBSET_DIR}/uids.parquet"
UIDS_NPY = f"{SUBSET_DIR}/uids.npy"
DATACOMP_UID = re.compile(r"^[0-9a-f]{32}$")
_BATCH = 65_536


def datacomp_uid_pairs(uids: list[str]) -> np.ndarray:
    """DataComp uids (32 hex digits) as sorted unique (u8, u8) pairs, as DataComp's subset files hold them."""
    pairs = np.array([(int(u[:16], 16), int(u[16:32], 16)) for u in uids], np.dtype("u8,u8"))
    return np.unique(pairs)  # sorted


def _write_content_uids(exported: DataFrame, path: str) -> int:
    fs, p = io.filesystem(path)
    fs.makedirs(p.rsplit("/", 1)[0], exist_ok=True)
    schema = pa.schema([pa.field("uid", pa.string(), nullable=False)])
    count, batch = 0, []
    with fs.open(p + ".tmp", "wb") as f, pq.ParquetWriter(f, schema) as writer:
        for row in exported.select("uid").orderBy("uid").toLocalIterator():
            batch.append(row["uid"])
            if len(batch) == _BATCH:
                writer.write_table(pa.table({"uid": batch}, schema=schema))
                count, batch = count + len(batch), []
        writer.write_table(pa.table({"uid": batch}, schema=schema))
        count += len(batch)
    fs.mv(p + ".tmp", p)
    return count


def write_uid_lists(exported: DataFrame, out_dir: str) -> dict[str, Any]:
    """Write `uids.parquet` and, when the exported samples' source has DataComp uids, `uids.npy`
    into `out_dir`; `exported` has the export's `uid` and `source` (JSON) columns. Returns the
    counts (for the manifest): content uids, and DataComp uids found (None: no `uid` in the source)."""
    counts: dict[str, Any] = {"content_uids": _write_content_uids(exported, f"{out_dir}/{UIDS_PARQUET}")}
    source_uid = F.lower(F.get_json_object("source", "$.uid")).alias("u")
    chunks, batch, found, valid = [], [], 0, 0
    for row in exported.select(source_uid).where(F.col("u").isNotNull()).toLocalIterator():
        found += 1
        if DATACOMP_UID.match(row["u"]):
            valid += 1
            batch.append(row["u"])
        if len(batch) == _BATCH:
            chunks.append(datacomp_uid_pairs(batch))
            batch = []
    if not found:
        counts["datacomp_uids"] = None
        return counts
    chunks.append(datacomp_uid_pairs(batch))
    pairs = np.unique(np.concatenate(chunks))
    buffer = pyio.BytesIO()
    np.save(buffer, pairs)
    io.write_bytes_atomic(f"{out_dir}/{UIDS_NPY}", buffer.getvalue())
    counts.update(datacomp_uids=int(len(pairs)), datacomp_uids_not_hex=found - valid)
    return counts
