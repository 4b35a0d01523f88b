"""What every end-to-end test of a run asserts: each sample fed is accounted for, once."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import webdataset as wds

from pipeline.verify import verify_run


def readme_reader_count(export_dir: Path) -> int:
    """Samples the README's webdataset reader gets from the export (it raises on a sample it cannot
    read: an image under another extension, a missing caption)."""
    tars = sorted(str(p) for p in export_dir.glob("*.tar"))
    if not tars:
        return 0
    ds = wds.WebDataset(tars, shardshuffle=False).decode("pil").to_tuple("jpg;png;webp", "txt")
    return sum(1 for _ in ds)


def assert_accounted(run_dir: Path, expected: dict[str, str | None]) -> dict:
    """The run's ledger input is the number of samples fed (`expected`: sample_id -> quarantine
    reason, counted by the test itself), ingest gave each its expected fate, nothing was lost on the
    way, `curate verify` passes and the README's reader reads every exported sample. Returns the ledger."""
    ledger = json.loads((run_dir / "ledger.json").read_text())
    rows = pq.read_table(run_dir / "ingest" / "parts", columns=["sample_id", "quarantine_reason"]).to_pylist()
    got = {r["sample_id"]: r["quarantine_reason"] for r in rows}
    assert len(rows) == len(got) == ledger["input"] == len(expected)
    assert got == expected
    removed = sum(sum(reasons.values()) for reasons in ledger["removed"].values())
    assert ledger["kept"] + removed == sum(reason is None for reason in expected.values())
    report = verify_run(str(run_dir))
    assert report.ok, report.problems
    assert readme_reader_count(run_dir / "export") == ledger["kept"] == report.samples
    return ledger
