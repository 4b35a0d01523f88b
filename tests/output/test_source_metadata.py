"""Source metadata carried through to the output, and the curated subset as uid lists."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from pipeline.core.config import config_from_dict
from pipeline.core.runner import RunResult, run_pipeline


def datacomp_uid(key: str) -> str:
    return hashlib.md5(f"pool:{key}".encode()).hexdigest()


@pytest.fixture(scope="module")
def pool(demo_dir: Path, tmp_path_factory) -> Path:
    """The demo shards, with DataComp-style `uid` and an extra column in every parquet (as img2dataset's
    `save_additional_columns` writes them)."""
    out = tmp_path_factory.mktemp("pool")
    shutil.copytree(demo_dir / "shards", out / "shards")
    for path in sorted((out / "shards").glob("*.parquet")):
        table = pq.read_table(path)
        keys = table.column("key").to_pylist()
        table = table.append_column("uid", pa.array([datacomp_uid(f"{path.stem}/{k}") for k in keys]))
        table = table.append_column("aesthetic", pa.array([float(i) / 7 for i in range(len(keys))]))
        pq.write_table(table, path)
    return out / "shards"


@pytest.fixture(scope="module")
def run(spark, pool: Path, tmp_path_factory) -> RunResult:
    return run_pipeline(config_from_dict({"input": str(pool), "run_dir": str(tmp_path_factory.mktemp("run")),
                                          "basic_filter": {"min_side": 32}, "export": {"samples_per_shard": 100}}))


def source_rows(pool: Path) -> dict[str, dict]:
    return {f"{p.stem}/{r['key']}": r for p in sorted(pool.glob("*.parquet")) for r in pq.read_table(p).to_pylist()}


def test_every_source_column_and_json_field_reaches_the_output(run: RunResult, pool: Path) -> None:
    sources = source_rows(pool)
    export = Path(run.export_dir)
    rows = [r for p in sorted(export.glob("0*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert len(rows) == run.ledger["kept"] > 0
    members = {s["__key__"]: json.loads(s["json"]) for s in wds.WebDataset(str(export / "0*.tar").replace("0*", "{"
               + ",".join(p.stem for p in sorted(export.glob("0*.tar"))) + "}"), shardshuffle=False)}
    for row in rows:
        expected = sources[row["sample_id"]]
        got = json.loads(row["source"])
        assert {k: got[k] for k in expected} == expected  # every parquet column, same value
        assert members[row["key"]]["source"] == got  # the .json member holds it as an object
    assert {"uid", "aesthetic", "original_width", "exif", "status", "sha256"} <= set(json.loads(rows[0]["source"]))


def test_uid_lists_reproduce_the_exported_set(run: RunResult, pool: Path) -> None:
    export = Path(run.export_dir)
    rows = [r for p in sorted(export.glob("0*.parquet")) for r in pq.read_table(p).to_pylist()]
    uids = pq.read_table(export / "subset" / "uids.parquet").column("uid").to_pylist()
    assert uids == sorted(r["uid"] for r in rows)
    pairs = np.load(export / "subset" / "uids.npy")
    as_tuples = pairs.tolist()
    assert pairs.dtype == np.dtype("u8,u8") and as_tuples == sorted(set(as_tuples))  # sorted, unique
    datacomp = {datacomp_uid(r["sample_id"]) for r in rows}
    assert {f"{int(a):016x}{int(b):016x}" for a, b in as_tuples} == datacomp
    assert run.manifests["export"]["counts"]["uid_lists"] == {
        "content_uids": len(rows), "datacomp_uids": len(datacomp), "datacomp_uids_not_hex": 0}
