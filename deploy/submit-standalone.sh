#!/usr/bin/env bash
# spark-submit to a Spark standalone cluster (client mode: the driver runs here, so the config file
# and run_dir must be reachable from this machine and from every worker).
#   MASTER=spark://host:7077 deploy/submit-standalone.sh run.yaml [--set key=value ...]
# Knobs: EXECUTOR_CORES (8), EXECUTOR_MEMORY (16g), PYTHON_MEMORY (8g: torch and FAISS live outside
# the JVM), TOTAL_CORES, DRIVER_MEMORY (8g), GPUS_PER_EXECUTOR / GPU_PER_TASK (see common.sh).
# GPU workers also need, in their SPARK_WORKER_OPTS: -Dspark.worker.resource.gpu.amount=N
# -Dspark.worker.resource.gpu.discoveryScript=$CURATE_HOME/deploy/gpu_discovery.sh
# Workers without the package: PY_FILES=dist/curate_pipeline.zip (their PYTHON has the
# dependencies) or ENV_ARCHIVE=dist/curate-env.tar.gz (see common.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[ $# -ge 1 ] || usage
: "${MASTER:?set MASTER=spark://host:7077}"
config="$1"; shift

exec "${SPARK_SUBMIT}" \
  --master "${MASTER}" \
  --deploy-mode client \
  --driver-memory "${DRIVER_MEMORY:-8g}" \
  --executor-cores "${EXECUTOR_CORES}" \
  --executor-memory "${EXECUTOR_MEMORY:-16g}" \
  --conf "spark.executor.pyspark.memory=${PYTHON_MEMORY:-8g}" \
  ${TOTAL_CORES:+--total-executor-cores "${TOTAL_CORES}"} \
  "${COMMON_CONF[@]}" \
  "${SHIP_CONF[@]}" \
  "${GPU_CONF[@]}" \
  "${JOB}" --config "${config}" "$@"
