"""An independent, exact reference for  min ||x - t||^2  s.t.  sum(x) = total,  lo <= x <= hi.

Solved in rational arithmetic (fractions.Fraction) by a linear scan over every breakpoint of the
KKT shift, not by bisection, and returned with its certificate: the shift lam and the check that
x = clip(t - lam, lo, hi) satisfies the KKT conditions of the convex problem exactly, which makes
it the unique optimum. It cannot fail to converge and shares no code with pipeline.prune.allocate.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np


def _clip(v: Fraction, a: Fraction, b: Fraction) -> Fraction:
    return min(max(v, a), b)


def exact_box_simplex_projection(target: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                                 total: float) -> np.ndarray:
    """The projection of `target` onto {x : sum(x) = total, lo <= x <= hi}, exact, as float64."""
    t = [Fraction(float(v)) for v in target]
    a = [Fraction(float(v)) for v in lo]
    b = [Fraction(float(v)) for v in hi]
    s = Fraction(float(total))
    assert all(x <= y for x, y in zip(a, b)) and sum(a) <= s <= sum(b), "infeasible case"

    def filled(lam: Fraction) -> Fraction:
        return sum(_clip(ti - lam, ai, bi) for ti, ai, bi in zip(t, a, b))

    points = sorted({ti - bi for ti, bi in zip(t, b)} | {ti - ai for ti, ai in zip(t, a)})
    values = [filled(p) for p in points]  # non-increasing; values[0] = sum(hi), values[-1] = sum(lo)
    lam = points[0]
    for p, q, fp, fq in zip(points, points[1:], values, values[1:]):
        if fp >= s >= fq:
            lam = p if fp == fq else p + (fp - s) * (q - p) / (fp - fq)
            break
    x = [_clip(ti - lam, ai, bi) for ti, ai, bi in zip(t, a, b)]
    # certificate: feasibility and the KKT conditions of each coordinate under the shift lam
    assert sum(x) == s
    for xi, ti, ai, bi in zip(x, t, a, b):
        grad = xi - ti + lam  # d/dx_i of the Lagrangian / 2
        assert ai <= xi <= bi
        assert (grad == 0) or (xi == ai and grad > 0) or (xi == bi and grad < 0)
    return np.array([float(v) for v in x])
