"""Arrow schemas of every table the pipeline writes, and the Spark types derived from them."""

from schemas.tables import (
    ASSIGNMENTS,
    CENTROIDS,
    CLUSTER_STATS,
    CONTAINMENT_BY_SHARD,
    DBP_QUOTAS,
    DECISIONS,
    EMBEDDINGS,
    EVAL_MATCHES,
    EVAL_SAMPLES,
    EXPORT_ROWS,
    SAMPLES,
    SCORES,
    spark_schema,
)

__all__ = [
    "ASSIGNMENTS",
    "CENTROIDS",
    "CLUSTER_STATS",
    "CONTAINMENT_BY_SHARD",
    "DBP_QUOTAS",
    "DECISIONS",
    "EMBEDDINGS",
    "EVAL_MATCHES",
    "EVAL_SAMPLES",
    "EXPORT_ROWS",
    "SAMPLES",
    "SCORES",
    "spark_schema",
]
