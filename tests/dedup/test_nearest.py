"""The nearest-reference search used by decontamination and containment, against numpy."""

from __future__ import annotations

import faiss
import numpy as np

from pipeline.dedup.nearest import best_matches


def test_best_match_is_the_numpy_argmax_and_its_cosine() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 16)).astype(np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    x = np.concatenate([ref[[3, 7, 7]] + 0.01 * rng.normal(size=(3, 16)), rng.normal(size=(40, 16))]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(16)
    index.add(ref)
    best, cos = best_matches(x, index, ref)
    sims = x.astype(np.float64) @ ref.T.astype(np.float64)
    np.testing.assert_array_equal(best, sims.argmax(axis=1))
    np.testing.assert_allclose(cos, sims.max(axis=1), atol=1e-6)
    assert best[:3].tolist() == [3, 7, 7] and (cos[:3] > 0.99).all()
    alone, _ = best_matches(x[5:6], index, ref)  # a row's result does not depend on its batch
    assert alone[0] == best[5]
