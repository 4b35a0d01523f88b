"""Arrow schemas of every table the pipeline writes, and the Spark types derived from them."""

from schemas.tables import DECISIONS, EXPORT_ROWS, SAMPLES, spark_schema

__all__ = ["DECISIONS", "EXPORT_ROWS", "SAMPLES", "spark_schema"]
