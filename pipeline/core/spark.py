"""SparkSession factory: embedded local[*] by default; under spark-submit the cluster's settings stand."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from urllib.parse import urlsplit

from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession

from pipeline.core.config import ConfigError, SparkConfig


LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")


def launched_by_spark_submit() -> bool:
    """True when this Python process was started by spark-submit (the JVM is already up)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def _java_options() -> str:
    """The driver JVM's log4j config, and the run's log file for Spark's own log lines when a run
    log is open (`runlog.start_run_log` sets CURATE_LOG_FILE): they stay off the terminal."""
    options = f"-Dlog4j2.configurationFile={LOG4J_CONFIG}"
    log_file = os.environ.get("CURATE_LOG_FILE")
    return f"{options} -Dcurate.logfile={log_file}" if log_file else options


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
            .config("spark.driver.extraJavaOptions", _java_options())
        )
        for key, value in cfg.conf.items():
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    return spark


def _connector_hint(scheme: str, hadoop_version: str) -> str:
    """What to add so that Spark's Hadoop opens `scheme://` URLs."""
    hadoop_aws = (f"hadoop-aws and its AWS SDK bundle on Spark's classpath, e.g. "
                  f"--packages org.apache.hadoop:hadoop-aws:{hadoop_version}")
    hints = {
        "s3a": hadoop_aws,
        "s3": f"an s3:// FileSystem (EMRFS on EMR), or use s3a:// with {hadoop_aws}",
        "gs": "the GCS connector (gcs-connector-hadoop3 jar on Spark's classpath; built into Dataproc)",
        "abfs": "hadoop-azure on Spark's classpath", "abfss": "hadoop-azure on Spark's classpath",
        "wasb": "hadoop-azure on Spark's classpath", "wasbs": "hadoop-azure on Spark's classpath",
    }
    return hints.get(scheme, f"a Hadoop FileSystem jar for it on Spark's classpath (spark.jars or --packages) "
                             f"and spark.hadoop.fs.{scheme}.impl")


def require_hadoop_filesystem(spark: SparkSession, url: str, what: str) -> None:
    """Raise a one-line ConfigError naming `what` (the config key or option), the scheme and the
    connector to add, unless Spark's JVM has a Hadoop FileSystem for `url`'s scheme (Spark reads and
    writes the run folder's tables itself)."""
    scheme = urlsplit(url).scheme if "://" in url else "file"
    jvm = spark.sparkContext._jvm
    try:
        jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(scheme, spark.sparkContext._jsc.hadoopConfiguration())
    except Py4JJavaError as err:
        cause = str(err.java_exception.toString()).splitlines()[0]
        hint = _connector_hint(scheme, jvm.org.apache.hadoop.util.VersionInfo.getVersion())
        raise ConfigError(f"{what} '{url}': this Spark cannot open {scheme}:// URLs ({cause}); add {hint}") from None
