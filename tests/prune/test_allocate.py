"""Quota allocation against independent solutions: an exact rational-arithmetic projection with a KKT
certificate for the continuous QP, exhaustive search over integer vectors for small cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pipeline.core.config import BudgetConfig
from pipeline.prune.allocate import (
    allocate,
    balanced_quotas,
    dbp_min_quota,
    dbp_quotas,
    project_box_simplex,
    proportional_quotas,
    softmax,
)
from pipeline.prune.keep import plan_keep
from tests.prune.qp_reference import exact_box_simplex_projection


def dbp_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int, float, float]:
    k = int(rng.integers(2, 40))
    sizes = rng.integers(1, 200, size=k)
    complexity = rng.uniform(0.0, 1.5, size=k)
    n_keep = int(rng.integers(1, sizes.sum() + 1))
    return sizes, complexity, n_keep, float(rng.choice([0.1, 0.5, 2.0])), float(rng.choice([0.0, 0.5, 1.0]))


@pytest.mark.parametrize("seed", range(12))
def test_dbp_quotas_match_an_independent_qp_solution(seed: int) -> None:
    sizes, complexity, n_keep, tau, min_share = dbp_case(np.random.default_rng(seed))
    quotas = dbp_quotas(sizes, complexity, n_keep, tau, min_share)
    target = softmax(complexity, tau) * n_keep
    lo = np.minimum(dbp_min_quota(n_keep, len(sizes), min_share), sizes)
    reference = exact_box_simplex_projection(target, lo, sizes, n_keep)
    ours = project_box_simplex(target, lo, sizes, n_keep)
    np.testing.assert_allclose(ours, reference, atol=1e-4 * max(1.0, n_keep / len(sizes)))
    assert quotas.sum() == n_keep
    assert np.all(quotas >= lo) and np.all(quotas <= sizes)
    assert np.all(np.abs(quotas - reference) < 1 + 1e-4)


def test_softmax_weights_follow_complexity() -> None:
    p = softmax(np.array([0.1, 0.2, 0.3]), 0.5)
    assert p.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(p[1] / p[0], math.exp(0.2), rtol=1e-12)
    assert np.all(np.diff(p) > 0)


@pytest.mark.parametrize("seed", range(30))
def test_integer_quotas_are_the_integer_least_squares_optimum(seed: int) -> None:
    """Exhaustive search over every integer vector in the box summing to the total."""
    rng = np.random.default_rng(100 + seed)
    k = int(rng.integers(2, 5))
    hi = rng.integers(0, 7, size=k)
    lo = np.minimum(rng.integers(0, 3, size=k), hi)
    total = int(rng.integers(lo.sum(), hi.sum() + 1))
    target = rng.uniform(-1, 8, size=k)
    got = allocate(target, lo, hi, total)
    best = min(
        sum((np.array(n) - target) ** 2)
        for n in itertools.product(*(range(a, b + 1) for a, b in zip(lo, hi)))
        if sum(n) == total
    )
    assert got.sum() == total and np.all(got >= lo) and np.all(got <= hi)
    assert np.sum((got - target) ** 2) == pytest.approx(best, abs=1e-9)


def test_balanced_quotas_cap_small_clusters_and_redistribute() -> None:
    np.testing.assert_array_equal(balanced_quotas(np.array([1, 5, 10]), 9), [1, 4, 4])
    np.testing.assert_array_equal(balanced_quotas(np.array([2, 2, 100]), 30), [2, 2, 26])
    q = balanced_quotas(np.array([3, 7, 7, 7]), 10)  # level 10/4: three clusters get 2 or 3
    assert q.sum() == 10 and sorted(q.tolist()) == [2, 2, 3, 3]


def test_proportional_quotas_keep_the_same_fraction_everywhere() -> None:
    sizes = np.array([10, 20, 30, 41])
    q = proportional_quotas(sizes, 50)
    assert q.sum() == 50
    assert np.all(np.abs(q - sizes * 50 / sizes.sum()) < 1)


def test_impossible_allocations_are_refused() -> None:
    with pytest.raises(ValueError):
        allocate(np.ones(3), np.zeros(3, int), np.array([1, 1, 1]), 4)
    with pytest.raises(ValueError):
        dbp_quotas(np.array([5, 5]), np.zeros(2), 11)


def test_keep_plan_uses_the_budget_floor_and_caps_at_the_pool() -> None:
    assert plan_keep(1000, fraction=0.3).n_keep == 300
    assert plan_keep(1000, count=1200).n_keep == 1000
    raised = plan_keep(1000, fraction=0.3, budget=BudgetConfig(samples_seen=2000, max_repeats=4))
    assert (raised.requested, raised.budget_min, raised.n_keep) == (300, 500, 500)
    assert "raised to 500" in raised.reasoning
    kept = plan_keep(1000, fraction=0.3, budget=BudgetConfig(samples_seen=600, max_repeats=4))
    assert kept.n_keep == 300 and kept.budget_min == 150
    capped = plan_keep(1000, budget=BudgetConfig(samples_seen=10_000, max_repeats=2))
    assert capped.n_keep == 1000 and capped.fraction == 1.0 and "capped at the pool" in capped.reasoning
