"""pipeline.cluster.kmeans with numpy and FAISS alone (no Spark)."""

from __future__ import annotations

import faiss
import numpy as np
import pyarrow as pa
import pytest

from pipeline.cluster.kmeans import (
    DIST_SCALE,
    PartialStats,
    assign,
    build_index,
    centroids_table,
    cluster_stats_table,
    hash_threshold,
    index_from_bytes,
    index_to_bytes,
    init_points,
    kmeans_plus_plus,
    neighbour_distances,
    normalize_rows,
    row_dots,
    train_kmeans,
    vectors_from_arrow,
)
from pipeline.cluster.broadcast import rebatch
from tests.cluster import adjusted_rand_index, blobs


def unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_normalize_rows_unit_zero_safe_and_row_by_row() -> None:
    x = np.random.default_rng(0).standard_normal((5000, 24)).astype(np.float32) * 7
    x[3] = 0
    y = normalize_rows(x)
    assert y.dtype == np.float32
    norms = np.linalg.norm(y.astype(np.float64), axis=1)
    assert np.all(y[3] == 0) and np.allclose(np.delete(norms, 3), 1, atol=1e-6)
    assert np.array_equal(y[17:18], normalize_rows(x[17:18]))  # a row's result ignores its batch
    assert np.array_equal(y, np.concatenate([normalize_rows(x[a : a + 333]) for a in range(0, 5000, 333)]))
    units = np.delete(y, 3, axis=0)
    assert normalize_rows(units) is units  # unit rows are left alone, without a copy
    z = x.copy()
    assert normalize_rows(z, inplace=True) is z and np.array_equal(z, y)


def test_row_dots_ignore_batch_and_memory_offset() -> None:
    x, y = unit(999, 37, 10), unit(999, 37, 11)  # rows of 148 bytes: every alignment occurs
    whole = row_dots(x, y)
    assert whole.dtype == np.float32
    assert np.allclose(whole, np.einsum("ij,ij->i", x.astype(np.float64), y.astype(np.float64)), atol=1e-6)
    single = np.array([row_dots(x[i : i + 1].copy(), y[i : i + 1].copy())[0] for i in range(999)])
    assert np.array_equal(whole, single)


def test_init_points_bounds_the_seeding_cost() -> None:
    assert init_points(3000, 12) == 3000  # small problems: all of the sample
    assert init_points(256_000, 1000) == 8000  # 8 per centre
    assert init_points(100_000, 1000) == 6250  # ~2.5% of the training's dot products
    assert init_points(256_000, 50_000) == 50_000  # at least k: then it is the random init


def test_kmeans_plus_plus_is_seeded_and_spreads_over_blobs() -> None:
    x, labels = blobs()
    c1 = kmeans_plus_plus(x, 12, seed=5)
    assert np.array_equal(c1, kmeans_plus_plus(x, 12, seed=5))
    assert not np.array_equal(c1, kmeans_plus_plus(x, 12, seed=6))
    picked = [int(np.flatnonzero((x == c).all(1))[0]) for c in c1]  # centres are input rows
    assert len(set(labels[picked])) == 12  # one per blob
    with pytest.raises(ValueError):
        kmeans_plus_plus(x[:5], 12, seed=0)


def test_train_recovers_blobs_deterministically_with_any_thread_count() -> None:
    x, labels = blobs()
    runs = []
    threads = faiss.omp_get_max_threads()
    try:
        for n_threads in (1, 2, 1):
            faiss.omp_set_num_threads(n_threads)
            runs.append(train_kmeans(x, 12, iterations=10, seed=3))
    finally:
        faiss.omp_set_num_threads(threads)
    c = runs[0].centroids
    assert c.dtype == np.float32 and c.shape == (12, 32)
    assert np.allclose(np.linalg.norm(c, axis=1), 1, atol=1e-6)
    assert all(r.centroids.tobytes() == c.tobytes() for r in runs)
    assert runs[0].device == "cpu" and runs[0].n_train == 3000
    found = np.argmax(x @ c.T, axis=1)
    assert adjusted_rand_index(labels, found) >= 0.99
    # the objective is the sum of cos(x, nearest centroid)
    assert abs(runs[0].objective / 3000 - np.max(x @ c.T, axis=1).mean()) < 1e-3


def test_train_options_and_errors() -> None:
    x, _ = blobs(n=600)
    random_init = train_kmeans(x, 12, iterations=5, seed=1, init="random", redo=2)
    assert random_init.best_redo in (0, 1) and random_init.centroids.shape == (12, 32)
    assert train_kmeans(x, 12, iterations=5, seed=1).centroids.tobytes() != \
        train_kmeans(x, 12, iterations=5, seed=2).centroids.tobytes()
    with pytest.raises(ValueError, match="at least 12"):
        train_kmeans(x[:11], 12)


def brute_force(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sims = x.astype(np.float64) @ c.astype(np.float64).T
    return np.argmax(sims, axis=1), 1 - np.max(sims, axis=1)


def test_assign_is_exact_nearest_centroid_whatever_the_batch() -> None:
    x, c = unit(3000, 48, 0), unit(50, 48, 1)
    index = build_index(c)
    ids, dist = assign(index, c, x)
    want_ids, want_dist = brute_force(x, c)
    assert ids.dtype == np.int32 and dist.dtype == np.float32
    assert np.array_equal(ids, want_ids)
    assert np.allclose(dist, want_dist, atol=1e-6) and dist.min() >= 0
    # FAISS's float32 scores depend on the batch (BLAS blocking, a non-BLAS path below 20 rows);
    # the re-scored result does not
    for size in (1, 7, 1000):
        parts = [assign(index, c, x[a : a + size]) for a in range(0, len(x), size)]
        assert np.array_equal(np.concatenate([p[0] for p in parts]), ids)
        assert np.array_equal(np.concatenate([p[1] for p in parts]), dist)
    copy = index_from_bytes(index_to_bytes(index))
    assert all(np.array_equal(a, b) for a, b in zip(assign(copy, c, x), (ids, dist)))


def test_assign_ties_go_to_the_lower_id_and_single_centroid_works() -> None:
    c = unit(3, 8, 2)
    c = np.stack([c[0], c[1], c[1]])  # clusters 1 and 2 are the same point
    ids, _ = assign(build_index(c), c, c[1:2].copy())
    assert ids.tolist() == [1]
    one = c[:1]
    ids, dist = assign(build_index(one), one, unit(5, 8, 3))
    assert ids.tolist() == [0] * 5 and dist.shape == (5,)


def test_ivf_index_probing_every_cell_equals_flat() -> None:
    x, c = unit(2000, 32, 3), unit(64, 32, 4)
    flat = assign(build_index(c), c, x)
    exact_ivf = build_index(c, "ivf", nlist=8, nprobe=8)
    assert all(np.array_equal(a, b) for a, b in zip(assign(exact_ivf, c, x), flat))
    approx = assign(build_index(c, "ivf", nlist=8, nprobe=1), c, x)
    assert np.mean(approx[0] == flat[0]) > 0.3  # approximate (uniform random data: the worst case)
    ivf_copy = index_from_bytes(index_to_bytes(exact_ivf))
    assert np.array_equal(assign(ivf_copy, c, x)[0], flat[0])


def test_partial_stats_merge_exactly_in_any_order() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 6, 10_000).astype(np.int32)
    ids[ids == 4] = 5  # cluster 4 empty
    dist = rng.random(10_000).astype(np.float32) * 2
    whole = PartialStats.empty(6)
    whole.add(ids, dist)
    for cuts in ([3, 5000], [9999], [1, 2, 3, 4, 7000]):
        pieces = np.split(np.arange(10_000), cuts)
        merged = PartialStats.empty(6)
        for piece in reversed(pieces):
            part = PartialStats.empty(6)
            part.add(ids[piece], dist[piece])
            merged.merge(part)
        assert np.array_equal(merged.size, whole.size)
        assert np.array_equal(merged.dist_qsum, whole.dist_qsum)
        assert np.array_equal(merged.max_dist, whole.max_dist)
    for j in (0, 5):
        sel = dist[ids == j].astype(np.float64)
        assert whole.size[j] == len(sel)
        assert abs(whole.dist_qsum[j] / DIST_SCALE / len(sel) - sel.mean()) < 1e-9
        assert whole.max_dist[j] == sel.max()


def test_neighbour_distances_brute_force() -> None:
    c = unit(30, 16, 5).astype(np.float64)
    sims = c @ c.T
    np.fill_diagonal(sims, -np.inf)
    for m in (1, 5, 29):
        want = np.array([np.mean(1 - np.sort(row)[::-1][:m]) for row in sims])
        assert np.allclose(neighbour_distances(c, m), want, atol=1e-12)
    assert np.allclose(neighbour_distances(c, 100), neighbour_distances(c, 29))  # capped at K - 1
    assert np.isnan(neighbour_distances(c[:1], 20)).all()


def test_cluster_stats_table_nulls_for_empty_clusters() -> None:
    stats = PartialStats.empty(3)
    stats.add(np.array([0, 0, 2], np.int32), np.array([0.1, 0.3, 0.5], np.float32))
    table = cluster_stats_table(stats, np.array([0.5, 0.6, 0.7]))
    rows = table.to_pylist()
    assert [r["size"] for r in rows] == [2, 0, 1]
    assert rows[1]["mean_dist"] is None and rows[1]["max_dist"] is None and rows[1]["complexity"] is None
    assert rows[1]["d_inter"] == 0.6
    assert abs(rows[0]["mean_dist"] - 0.2) < 1e-8 and rows[0]["max_dist"] == pytest.approx(0.3)
    assert rows[2]["complexity"] == pytest.approx(0.5 * 0.7)


def test_vectors_from_arrow_and_centroids_table() -> None:
    c = unit(5, 4, 6)
    column = centroids_table(c).column("centroid")
    assert np.array_equal(vectors_from_arrow(column), c)
    chunked = pa.chunked_array([column.chunk(0).slice(1, 2), column.chunk(0).slice(4)])
    assert np.array_equal(vectors_from_arrow(chunked), c[[1, 2, 4]])
    with pytest.raises(ValueError, match="different lengths"):
        vectors_from_arrow(pa.array([[1.0, 2.0], [1.0]], pa.list_(pa.float32())))
    with pytest.raises(ValueError, match="null"):
        vectors_from_arrow(pa.array([[1.0, None]], pa.list_(pa.float32())))


def test_hash_threshold() -> None:
    assert hash_threshold(100, 100) is None and hash_threshold(100, 500) is None
    t = hash_threshold(1000, 250)
    assert t == -(2**63) + 2**62  # a quarter of the 64-bit range
    assert hash_threshold(1000, 10) < hash_threshold(1000, 11) < hash_threshold(1000, 999) < 2**63


def test_rebatch_exact_sizes_in_order() -> None:
    batches = [pa.record_batch({"v": list(range(a, b))}) for a, b in [(0, 3), (3, 3), (3, 11), (11, 12)]]
    tables = list(rebatch(iter(batches), 4))
    assert [t.num_rows for t in tables] == [4, 4, 4]
    assert sum((t.column("v").to_pylist() for t in tables), []) == list(range(12))
    assert [t.num_rows for t in rebatch(iter(batches), 5)] == [5, 5, 2]
    assert list(rebatch(iter([]), 5)) == []
