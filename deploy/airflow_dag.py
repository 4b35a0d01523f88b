"""Nightly curation on a Spark cluster: an Airflow DAG running jobs/curate.py with SparkSubmitOperator.

Needs apache-airflow-providers-apache-spark and a Spark connection `spark_curate` (host
spark://master:7077, yarn, or k8s://https://api:6443) on an Airflow worker that has spark-submit and
this package installed at CURATE_HOME. Each run writes its own run folder; `curate status` then shows
what finished. Stages skip themselves when their output is up to date, so a retry resumes.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

CURATE_HOME = "/opt/curate"
RUN_CONFIG = "/etc/curate/run.yaml"
RUN_DIR = "/data/runs/{{ ds_nodash }}"

with DAG(
    dag_id="curate_nightly",
    schedule="0 2 * * *",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=15)},
    tags=["curate"],
) as dag:
    curate = SparkSubmitOperator(
        task_id="curate",
        conn_id="spark_curate",
        name="curate-{{ ds_nodash }}",
        application=f"{CURATE_HOME}/jobs/curate.py",
        application_args=["--config", RUN_CONFIG, "--set", f"run_dir={RUN_DIR}"],
        driver_memory="8g",
        executor_cores=8,
        executor_memory="16g",
        num_executors=8,
        conf={
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.executor.pyspark.memory": "16g",
            "spark.executor.resource.gpu.amount": "1",
            "spark.task.resource.gpu.amount": "0.125",
            "spark.executor.resource.gpu.discoveryScript": f"{CURATE_HOME}/deploy/gpu_discovery.sh",
        },
    )
    status = BashOperator(task_id="status", bash_command=f"curate status {RUN_DIR}")
    curate >> status
