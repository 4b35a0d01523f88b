"""DBP in the demo configuration (examples/demo-dbp.yaml, keep fraction 0.3) on the demo pool."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from pipeline.core.runner import RunResult
from pipeline.prune.allocate import dbp_min_quota, softmax
from tests.prune.conftest import pool_before, removed_ids, run_dir_of, table
from tests.prune.qp_reference import exact_box_simplex_projection


def test_demo_dbp_run_completes_with_a_balanced_ledger(dbp_run: RunResult) -> None:
    ledger = dbp_run.ledger
    removed = sum(sum(v.values()) for v in ledger["removed"].values())
    assert ledger["input"] == ledger["kept"] + removed + sum(ledger["quarantined"].values())
    assert list(dbp_run.manifests) == ["ingest", "basic_filter", "exact_dedup", "embed", "cluster", "dbp", "export"]
    keep = dbp_run.manifests["dbp"]["counts"]["keep"]
    pool = len(pool_before(dbp_run, "dbp"))
    assert keep["pool"] == pool > 200
    assert keep["n_keep"] == math.ceil(0.3 * pool)
    assert ledger["removed"]["dbp"] == {"dbp_pruned": pool - keep["n_keep"]}
    assert ledger["kept"] == keep["n_keep"]


def test_report_shows_kept_fraction_against_complexity(dbp_run: RunResult) -> None:
    report = json.loads((run_dir_of(dbp_run) / "report.json").read_text())
    text = json.dumps(report)
    assert "kept_fraction" in text and "complexity" in text
    html = (run_dir_of(dbp_run) / "report.html").read_text()
    assert "complexity" in html


def test_dbp_quotas_equal_an_independent_qp_solution(dbp_run: RunResult) -> None:
    """Complexity recomputed from the written tables, the bounded least-squares problem solved
    exactly (tests/prune/qp_reference.py), and the stage's integer quotas compared with it."""
    pool = pool_before(dbp_run, "dbp")
    stats = pool.groupby("cluster_id")["dist_to_centroid"].agg(["size", "mean"]).sort_index()
    d_inter = table(dbp_run, "cluster/cluster_stats").set_index("cluster_id")["d_inter"]
    complexity = (stats["mean"] * d_inter.loc[stats.index]).to_numpy()
    n_keep = math.ceil(0.3 * len(pool))
    sizes = stats["size"].to_numpy()
    lo = np.minimum(dbp_min_quota(n_keep, len(sizes), 0.5), sizes)
    reference = exact_box_simplex_projection(softmax(complexity, 0.5) * n_keep, lo, sizes, n_keep)

    quotas = table(dbp_run, "dbp/quotas").set_index("cluster_id").sort_index()
    assert list(quotas.index) == list(stats.index)
    np.testing.assert_array_equal(quotas["size"], sizes)
    np.testing.assert_allclose(quotas["complexity"], complexity, rtol=1e-6)
    got = quotas["quota"].to_numpy()
    assert got.sum() == n_keep
    assert np.all(got >= lo) and np.all(got <= sizes)
    assert np.all(np.abs(got - reference) < 1 + 1e-4), (got, reference)
    assert len(set(got.tolist())) > 1  # the complexities do change the quotas


def test_dbp_keeps_exactly_the_farthest_samples_of_each_cluster(dbp_run: RunResult) -> None:
    pool = pool_before(dbp_run, "dbp")
    removed = removed_ids(dbp_run, "dbp")
    quotas = table(dbp_run, "dbp/quotas").set_index("cluster_id")["quota"]
    for cluster, members in pool.groupby("cluster_id"):
        ranked = members.sort_values(["dist_to_centroid", "sample_id"], ascending=[False, True])
        expected_kept = set(ranked["sample_id"].iloc[: quotas[cluster]])
        kept = set(members["sample_id"]) - removed
        assert kept == expected_kept, cluster
    decisions = table(dbp_run, "dbp/decisions").merge(pool, on="sample_id")
    assert (decisions["reason"] == "dbp_pruned").all()
    np.testing.assert_allclose(decisions["score"], decisions["dist_to_centroid"].astype(np.float64))


def test_exported_samples_are_what_dbp_kept(dbp_run: RunResult) -> None:
    parts = sorted(run_dir_of(dbp_run).glob("export/*.parquet"))
    exported = set(pd.concat(pd.read_parquet(p) for p in parts)["sample_id"])
    pool = set(pool_before(dbp_run, "dbp")["sample_id"])
    assert exported == pool - removed_ids(dbp_run, "dbp")
