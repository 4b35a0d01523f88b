"""The cluster stage end to end: real Spark (the session fixture), real FAISS, synthetic blobs."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core import io
from pipeline.core.config import ConfigError, config_from_dict
from pipeline.core.stage import RunContext
from pipeline.core.tables import assignments_df, centroids, centroids_df, cluster_stats_df
from pipeline.stages.cluster import Cluster
from schemas import ASSIGNMENTS, CLUSTER_STATS, EMBEDDINGS
from tests.cluster import adjusted_rand_index, blobs

K = 12
CLUSTER = {"enabled": True, "n_clusters": K, "sample_size": 2000, "iterations": 15, "neighbours": 4,
           "assign_batch_size": 241}
N_NULL = 20  # rows without an image embedding
N_DUP = 30  # exact duplicates: same uid and embedding as another row


@lru_cache(maxsize=1)
def embedding_rows() -> tuple[pa.Table, np.ndarray]:
    """3000 blob rows (+ duplicates and null embeddings) as an EMBEDDINGS table; blob labels by row."""
    x, labels = blobs(n=3000 - N_DUP, k=K, d=32, seed=0)
    dup = np.arange(N_DUP) * 7
    x, labels = np.concatenate([x, x[dup]]), np.concatenate([labels, labels[dup]])
    uids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(len(x) - N_DUP)]
    uids += [uids[i] for i in dup] + [hashlib.sha256(f"null{i}".encode()).hexdigest() for i in range(N_NULL)]
    emb = [list(map(float, row)) for row in x] + [None] * N_NULL
    n = len(uids)
    table = pa.table(
        {
            "sample_id": [f"shard{i % 5}/{i:06d}" for i in range(n)],
            "uid": uids,
            "image_emb": pa.array(emb, pa.list_(pa.float32())),
            "text_emb": pa.array(emb, pa.list_(pa.float32())),
            "clip_score": pa.array(np.ones(n), pa.float32()),
        },
        schema=EMBEDDINGS,
    )
    return table, labels


def write_parts(run_dir: Path, table: pa.Table, sizes: list[int]) -> None:
    """The embed stage's output, split into files of the given row counts."""
    parts = run_dir / "embed" / "parts"
    parts.mkdir(parents=True)
    start = 0
    for i, size in enumerate(sizes):
        pq.write_table(table.slice(start, size), parts / f"{i:05d}.parquet")
        start += size
    assert start == table.num_rows
    (run_dir / "embed" / "_SUCCESS").write_bytes(b"")  # a finished stage: its tables can be read


def make_ctx(spark, run_dir: Path, seed: int = 0, **cluster) -> RunContext:
    cfg = config_from_dict({"input": str(Path(__file__).parent), "run_dir": str(run_dir), "seed": seed,
                            "cluster": {**CLUSTER, **cluster}})
    return RunContext(cfg=cfg, spark=spark)


@contextmanager
def one_partition_per_file(spark):
    """Spark otherwise packs small files together into as many partitions as it has cores."""
    key = "spark.sql.files.maxPartitionBytes"
    before = spark.conf.get(key)
    spark.conf.set(key, "1m")  # > every test file: no file is split, and none share a partition
    try:
        yield
    finally:
        spark.conf.set(key, before)


def run(spark, tmp: Path, name: str, sizes: list[int], permute: int | None = None, **kw) -> RunContext:
    table, _ = embedding_rows()
    if permute is not None:
        table = table.take(np.random.default_rng(permute).permutation(table.num_rows))
    write_parts(tmp / name, table, sizes)
    ctx = make_ctx(spark, tmp / name, **kw)
    if permute is not None:
        with one_partition_per_file(spark):
            Cluster().run(ctx)
    else:
        Cluster().run(ctx)
    return ctx


def read(ctx: RunContext, folder: str, schema: pa.Schema, key: str) -> pa.Table:
    table = io.read_parquet_dir(f"{ctx.stage_dir('cluster')}/{folder}", schema)
    return table.sort_by(key)


def assignments(ctx: RunContext) -> pa.Table:
    return read(ctx, "assignments", ASSIGNMENTS, "sample_id")


@pytest.fixture(scope="module")
def runs(spark, tmp_path_factory) -> dict[str, RunContext]:
    tmp = tmp_path_factory.mktemp("cluster")
    n = 3000 + N_NULL
    return {
        "a": run(spark, tmp, "a", [750, 750, 750, n - 2250]),
        "a_again": run(spark, tmp, "a_again", [750, 750, 750, n - 2250]),
        # other files, other row order, tiny partitions (FAISS scores them by another code path)
        "b": run(spark, tmp, "b", [5, 1200, 13, 700, 82, n - 2000], permute=1),
        # one task per file, read with pyarrow instead of Spark's reader
        "files": run(spark, tmp, "files", [5, 1200, 13, 700, 82, n - 2000], permute=2, assign_from="files"),
    }


def test_recovers_the_blobs(runs) -> None:
    ctx = runs["a"]
    table, labels = embedding_rows()
    got = read(ctx, "assignments", ASSIGNMENTS, "sample_id")
    by_id = dict(zip(got.column("sample_id").to_pylist(), got.column("cluster_id").to_pylist()))
    found = np.array([by_id[s] for s in table.column("sample_id").to_pylist()[: len(labels)]])
    assert adjusted_rand_index(labels, found) >= 0.99


def test_manifest_counts_and_outputs(runs) -> None:
    ctx = runs["a"]
    counts = ctx.manifest("cluster")["counts"]
    assert counts["n"] == 3000 + N_NULL and counts["assigned"] == 3000 and counts["no_embedding"] == N_NULL
    assert counts["k"] == K and counts["dim"] == 32 and counts["sample_size"] == 2000
    assert 0.9 < counts["sample_mean_cos"] <= 1 and counts["empty_clusters"] == 0
    c = centroids(ctx)
    assert c.dtype == np.float32 and c.shape == (K, 32)
    assert np.allclose(np.linalg.norm(c, axis=1), 1, atol=1e-6)
    rows = centroids_df(ctx).orderBy("cluster_id").collect()
    assert [r["cluster_id"] for r in rows] == list(range(K))
    assert np.array_equal(np.array([r["centroid"] for r in rows], np.float32), c)
    assert assignments_df(ctx).count() == 3000
    assert cluster_stats_df(ctx).count() == K
    assert not Path(ctx.stage_dir("cluster"), "_sample").exists()


def test_every_row_gets_its_nearest_centroid(runs) -> None:
    ctx = runs["a"]
    table, _ = embedding_rows()
    table = table.filter(table.column("image_emb").is_valid()).sort_by("sample_id")
    x = np.array(table.column("image_emb").to_pylist(), np.float64)
    c = centroids(ctx).astype(np.float64)
    got = read(ctx, "assignments", ASSIGNMENTS, "sample_id")
    assert got.column("sample_id").equals(table.column("sample_id"))
    assert got.column("uid").equals(table.column("uid"))
    sims = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ c.T
    assert np.array_equal(got.column("cluster_id").to_numpy(), np.argmax(sims, axis=1))
    assert np.allclose(got.column("dist_to_centroid").to_numpy(), 1 - sims.max(axis=1), atol=1e-6)


def test_cluster_stats_equal_numpy(runs) -> None:
    ctx = runs["a"]
    got = read(ctx, "assignments", ASSIGNMENTS, "sample_id")
    ids = got.column("cluster_id").to_numpy()
    dist = got.column("dist_to_centroid").to_numpy().astype(np.float64)
    c = centroids(ctx).astype(np.float64)
    sims = c @ c.T
    np.fill_diagonal(sims, -np.inf)
    d_inter = np.array([np.mean(1 - np.sort(row)[::-1][:4]) for row in sims])
    stats = read(ctx, "cluster_stats", CLUSTER_STATS, "cluster_id").to_pylist()
    assert [s["cluster_id"] for s in stats] == list(range(K))
    for j, s in enumerate(stats):
        mine = dist[ids == j]
        assert s["size"] == len(mine)
        assert s["mean_dist"] == pytest.approx(mine.mean(), abs=1e-9)
        assert s["max_dist"] == mine.max()
        assert s["d_inter"] == pytest.approx(d_inter[j], abs=1e-9)
        assert s["complexity"] == pytest.approx(mine.mean() * d_inter[j], abs=1e-9)


@pytest.mark.parametrize("other", ["a_again", "b", "files"])
def test_same_seed_same_outputs_whatever_the_partitioning(runs, other) -> None:
    a, b = runs["a"], runs[other]
    assert Path(a.stage_dir("cluster"), "centroids.npy").read_bytes() == \
        Path(b.stage_dir("cluster"), "centroids.npy").read_bytes()
    assert assignments(a).equals(assignments(b))
    assert read(a, "cluster_stats", CLUSTER_STATS, "cluster_id").equals(
        read(b, "cluster_stats", CLUSTER_STATS, "cluster_id"))
    if other != "a_again":  # the layout really differed: one part per input file
        assert len(list(Path(b.stage_dir("cluster"), "assignments").glob("*.parquet"))) == 6


def test_ivf_probing_every_cell_and_another_seed(spark, runs, tmp_path) -> None:
    """Another seed draws another sample (other centroid bits, same blobs); an ivf index that probes
    all its cells assigns exactly as flat does."""
    n = 3000 + N_NULL
    flat = run(spark, tmp_path, "flat", [n], seed=7, sample_size=5000)
    ivf = run(spark, tmp_path, "ivf", [n], seed=7, sample_size=5000, index="ivf", ivf_nlist=3, nprobe=3)
    assert centroids(flat).tobytes() != centroids(runs["a"]).tobytes()
    assert flat.manifest("cluster")["counts"]["sample_size"] == 3000  # capped at the rows there are
    assert assignments(flat).equals(assignments(ivf))
    ids = [assignments(ctx).column("cluster_id").to_numpy() for ctx in (flat, runs["a"])]
    assert adjusted_rand_index(*ids) >= 0.99


def test_fewer_embeddings_than_clusters_names_the_key(spark, tmp_path) -> None:
    table, _ = embedding_rows()
    write_parts(tmp_path / "few", table.slice(0, 10), [4, 6])
    with pytest.raises(ConfigError, match="'cluster.n_clusters'"):
        Cluster().run(make_ctx(spark, tmp_path / "few"))
    assert not (tmp_path / "few" / "cluster" / "_SUCCESS").exists()


def test_the_run_seed_is_part_of_the_fingerprint(spark, tmp_path) -> None:
    stage = Cluster()
    one, two = make_ctx(spark, tmp_path, seed=1), make_ctx(spark, tmp_path, seed=2)
    assert stage.fingerprint(one)[1] != stage.fingerprint(two)[1]


def test_frozen_centroids_assign_without_training(runs, spark, tmp_path) -> None:
    """A later run given the first run's concepts (`cluster.centroids`) trains nothing and assigns
    every sample exactly as the first run did, whatever its seed and file layout."""
    a = runs["a"]
    table, _ = embedding_rows()
    write_parts(tmp_path / "frozen", table, [1000, 1000, table.num_rows - 2000])
    ctx = make_ctx(spark, tmp_path / "frozen", seed=7, centroids=a.stage_dir("cluster"))
    Cluster().run(ctx)
    counts = ctx.manifest("cluster")["counts"]
    assert counts["trained"] is False and counts["k"] == K and counts["assigned"] == 3000
    assert counts["centroids_from"].endswith("/a/cluster/centroids.npy")
    folder = Path(ctx.stage_dir("cluster"))
    assert (folder / "centroids.npy").read_bytes() == (Path(a.stage_dir("cluster")) / "centroids.npy").read_bytes()
    assert assignments(ctx).equals(assignments(a))
    assert read(ctx, "cluster_stats", CLUSTER_STATS, "cluster_id").equals(read(a, "cluster_stats", CLUSTER_STATS, "cluster_id"))
    assert not (folder / "_sample").exists()


def test_bad_frozen_centroids_name_the_key(runs, spark, tmp_path) -> None:
    table, _ = embedding_rows()
    write_parts(tmp_path / "r", table, [table.num_rows])
    wrong_dim = tmp_path / "wrong.npy"
    np.save(wrong_dim, np.eye(4, 16, dtype=np.float32))
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"not": "numbers"}], dtype=object), allow_pickle=True)
    for path, message in ((wrong_dim, "16 dimensions"), (pickled, "not a plain .npy array")):
        with pytest.raises(ConfigError, match=rf"cluster\.centroids.*{message}"):
            Cluster().run(make_ctx(spark, tmp_path / "r", centroids=str(path)))
