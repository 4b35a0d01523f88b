"""Bounded allocation: integer quotas as close as possible (least squares) to real targets, inside
per-group bounds, summing exactly to a total. Pure numpy; used by DBP, per-cluster SSP and
cluster-balanced random.

The continuous problem  min ||x - t||^2  s.t.  sum(x) = total,  lo <= x <= hi  is the Euclidean
projection of t onto a box-constrained simplex. Its KKT conditions give x(lam) = clip(t - lam, lo,
hi) for one scalar shift lam; sum(x(lam)) is continuous, piecewise linear and non-increasing in lam,
with kinks at t - hi and t - lo. Bisection over the sorted kinks finds the linear piece holding
`total`, and lam is then solved exactly on that piece (water-filling). The integer quotas are the
floors plus one unit for the largest remainders (ties: lower index), which keeps integer bounds
(floor(x) >= lo, and only x < hi can get the extra unit) and the sum.
"""

from __future__ import annotations

import math

import numpy as np


def project_box_simplex(target: np.ndarray, lo: np.ndarray, hi: np.ndarray, total: float) -> np.ndarray:
    """argmin ||x - target||^2 subject to sum(x) = total and lo <= x <= hi (float64).

    Raises ValueError when infeasible: lo > hi somewhere, or total outside [sum(lo), sum(hi)].
    """
    t = np.asarray(target, dtype=np.float64)
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    if np.any(lo > hi):
        raise ValueError("lower bound above upper bound")
    if not lo.sum() - 1e-9 <= total <= hi.sum() + 1e-9:
        raise ValueError(f"total {total} outside [{lo.sum()}, {hi.sum()}]")
    if len(t) == 0:
        return t.copy()

    def filled(lam: float) -> float:
        return float(np.clip(t - lam, lo, hi).sum())

    kinks = np.unique(np.concatenate([t - hi, t - lo]))  # sorted; filled() is linear between them
    # filled(kinks[0]) = sum(hi) >= total >= sum(lo) = filled(kinks[-1]); find a <= lam* <= b
    a, b = 0, len(kinks) - 1
    while b - a > 1:
        mid = (a + b) // 2
        if filled(kinks[mid]) >= total:
            a = mid
        else:
            b = mid
    lam_a, lam_b = kinks[a], kinks[b]
    f_a, f_b = filled(lam_a), filled(lam_b)
    lam = lam_a if f_a == f_b else lam_a + (f_a - total) * (lam_b - lam_a) / (f_a - f_b)
    return np.clip(t - lam, lo, hi)


def round_largest_remainders(x: np.ndarray, total: int, hi: np.ndarray) -> np.ndarray:
    """Integers n with floor(x) <= n <= min(floor(x) + 1, hi) and sum(n) = total: the floors plus
    one unit for the `total - sum(floor(x))` largest remainders (ties: lower index)."""
    x = np.asarray(x, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.int64)
    base = np.minimum(np.floor(x + 1e-9).astype(np.int64), hi)  # 1e-9: 2.9999999999 is 3
    extra = int(total) - int(base.sum())
    room = np.flatnonzero(base < hi)
    if extra < 0 or extra > len(room):
        raise ValueError(f"cannot round to {total}: floors sum to {base.sum()}, {len(room)} can grow")
    remainder = x[room] - base[room]
    order = np.lexsort((room, -remainder))  # largest remainder first, then lower index
    base[room[order[:extra]]] += 1
    return base


def allocate(target: np.ndarray, lo: np.ndarray, hi: np.ndarray, total: int) -> np.ndarray:
    """Integer quotas closest (least squares) to `target` within integer bounds [lo, hi], summing
    exactly to `total`: the continuous projection, then largest-remainder rounding."""
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    x = project_box_simplex(target, lo, hi, total)
    n = round_largest_remainders(x, total, hi)
    assert n.sum() == total and np.all(n >= lo) and np.all(n <= hi)
    return n


def softmax(values: np.ndarray, tau: float) -> np.ndarray:
    """softmax(values / tau), computed stably."""
    z = np.asarray(values, dtype=np.float64) / tau
    if len(z) == 0:
        return z
    e = np.exp(z - z.max())
    return e / e.sum()


def dbp_min_quota(n_keep: int, n_clusters: int, min_share: float) -> int:
    """DBP's per-cluster floor m = floor(min_share * n_keep / K) (an integer, so that the floors
    min(m, |C_j|) always fit: their sum is at most min_share * n_keep <= n_keep)."""
    return math.floor(min_share * n_keep / n_clusters) if n_clusters else 0


def dbp_quotas(sizes: np.ndarray, complexity: np.ndarray, n_keep: int, tau: float = 0.5,
               min_share: float = 0.0) -> np.ndarray:
    """DBP quotas: N = argmin ||N - softmax(C / tau) * n_keep||^2 over integers with sum(N) = n_keep
    and min(m, |C_j|) <= N_j <= |C_j| (m from `dbp_min_quota`). int64 [K]."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if not 0 <= n_keep <= sizes.sum():
        raise ValueError(f"n_keep {n_keep} outside [0, {sizes.sum()}]")
    m = dbp_min_quota(n_keep, len(sizes), min_share)
    return allocate(softmax(complexity, tau) * n_keep, np.minimum(m, sizes), sizes, n_keep)


def balanced_quotas(sizes: np.ndarray, n_keep: int) -> np.ndarray:
    """Equal quotas n_keep / K per group, capped by the group's size, the excess redistributed to
    the others (water-filling); integers summing exactly to n_keep."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if len(sizes) == 0:
        return sizes.copy()
    return allocate(np.full(len(sizes), n_keep / len(sizes)), np.zeros_like(sizes), sizes, n_keep)


def proportional_quotas(sizes: np.ndarray, n_keep: int) -> np.ndarray:
    """Quotas proportional to the group sizes (the same keep fraction in every group), integers
    summing exactly to n_keep."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = sizes.sum()
    target = sizes * (n_keep / total) if total else sizes.astype(np.float64)
    return allocate(target, np.zeros_like(sizes), sizes, n_keep)
