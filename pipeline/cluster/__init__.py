"""Spherical k-means (FAISS) and its numpy helpers; the Spark stage is pipeline.stages.cluster."""

from pipeline.cluster.kmeans import (
    KMeansResult,
    PartialStats,
    assign,
    build_index,
    cluster_stats_table,
    neighbour_distances,
    normalize_rows,
    train_kmeans,
)

__all__ = [
    "KMeansResult",
    "PartialStats",
    "assign",
    "build_index",
    "cluster_stats_table",
    "neighbour_distances",
    "normalize_rows",
    "train_kmeans",
]
