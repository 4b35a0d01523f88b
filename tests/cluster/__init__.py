"""Shared helpers for the cluster tests: synthetic blobs on the unit sphere and the adjusted Rand index."""

from __future__ import annotations

import numpy as np
from scipy.special import comb


def blobs(n: int = 3000, k: int = 12, d: int = 32, seed: int = 0,
          noise: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """`n` unit vectors (float32) around `k` random unit centres, and each one's blob label."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, k, n)
    x = centres[labels] + noise * rng.standard_normal((n, d)) / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Hubert & Arabie's ARI of two labelings (1: identical partitions, ~0: chance)."""
    a = np.unique(a, return_inverse=True)[1]
    b = np.unique(b, return_inverse=True)[1]
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)
    pairs = comb(table, 2).sum()
    rows, cols, total = comb(table.sum(1), 2).sum(), comb(table.sum(0), 2).sum(), comb(len(a), 2)
    expected = rows * cols / total
    return float((pairs - expected) / ((rows + cols) / 2 - expected))
