"""`curate explain` on the demo DBP run: the real CLI entry point, reading the run's tables."""

from __future__ import annotations

import pyarrow.parquet as pq

from pipeline.cli import main
from pipeline.core.runner import RunResult
from tests.prune.conftest import run_dir_of, table


def exported_ids(run: RunResult) -> list[str]:
    parts = sorted(run_dir_of(run).glob("export/*.parquet"))
    return [sid for p in parts for sid in pq.read_table(p)["sample_id"].to_pylist()]


def explain(capsys, run: RunResult, key: str) -> tuple[int, str]:
    code = main(["explain", str(run_dir_of(run)), key])
    return code, capsys.readouterr().out


def test_explain_a_sample_dbp_removed(dbp_run: RunResult, capsys) -> None:
    decision = table(dbp_run, "dbp/decisions").sort_values("sample_id").iloc[0]
    assignment = table(dbp_run, "cluster/assignments").set_index("sample_id").loc[decision["sample_id"]]
    code, out = explain(capsys, dbp_run, decision["sample_id"])
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"sample {decision['sample_id']}  uid {decision['uid']}"
    assert any(line.split()[:2] == ["basic_filter", "passed"] for line in lines)
    assert any(line.split()[:2] == ["exact_dedup", "passed"] for line in lines)
    assert f"cluster_id {assignment['cluster_id']}" in out
    assert f"dbp           removed: dbp_pruned, score {decision['score']:.6g}" in out
    assert lines[-1] == "  => removed by dbp (dbp_pruned)"


def test_explain_kept_quarantined_and_duplicate_samples(dbp_run: RunResult, capsys) -> None:
    samples = table(dbp_run, "ingest/parts")
    sid = sorted(exported_ids(dbp_run))[0]
    code, out = explain(capsys, dbp_run, sid)
    assert code == 0 and out.splitlines()[-1] == "  => kept (exported)"
    assert "dbp           passed" in out

    bad = samples[samples["quarantine_reason"].notna()].sort_values("sample_id").iloc[0]
    code, out = explain(capsys, dbp_run, bad["sample_id"])
    assert out.splitlines()[-1] == f"  => quarantined at ingest ({bad['quarantine_reason']})"

    dup = table(dbp_run, "exact_dedup/decisions").sort_values("sample_id").iloc[0]
    code, out = explain(capsys, dbp_run, dup["uid"])  # by uid: every row with those bytes
    assert out.count("\nsample ") + out.startswith("sample ") >= 2
    assert f"exact_dedup   removed: exact_duplicate, matches {dup['matched_sample_id']}" in out


def test_explain_unknown_sample_fails(dbp_run: RunResult, capsys) -> None:
    assert main(["explain", str(run_dir_of(dbp_run)), "no/such"]) == 1
