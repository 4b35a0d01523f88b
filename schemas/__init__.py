"""Arrow schemas of every table the pipeline writes, and the Spark types derived from them."""

from schemas.tables import (
    ASSIGNMENTS,
    CENTROIDS,
    CLUSTER_STATS,
    DECISIONS,
    EMBEDDINGS,
    EXPORT_ROWS,
    SAMPLES,
    spark_schema,
)

__all__ = [
    "ASSIGNMENTS",
    "CENTROIDS",
    "CLUSTER_STATS",
    "DECISIONS",
    "EMBEDDINGS",
    "EXPORT_ROWS",
    "SAMPLES",
    "spark_schema",
]
