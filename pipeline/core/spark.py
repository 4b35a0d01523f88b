"""SparkSession factory: embedded local[*] by default; under spark-submit the cluster's settings stand."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from pipeline.core.config import SparkConfig


LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")


def launched_by_spark_submit() -> bool:
    """True when this Python process was started by spark-submit (the JVM is already up)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(cfg: SparkConfig | None = None) -> SparkSession:
    """Reuse the active session, else start one.

    Embedded use gets `cfg.master` (default local[*]), Arrow transfers and this interpreter for the
    Python workers. Under spark-submit nothing is overridden: master, resources and conf come from
    the submit command and the cluster defaults.
    """
    cfg = cfg or SparkConfig()
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(cfg.app_name)
    if not launched_by_spark_submit():
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        builder = (
            builder.master(cfg.master)
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.sql.shuffle.partitions", "8")
            .config("spark.ui.showConsoleProgress", "true")
            .config("spark.ui.enabled", "false")
            .config("spark.driver.memory", "4g")
            .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={LOG4J_CONFIG}")
        )
        for key, value in cfg.conf.items():
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    return spark
