#!/usr/bin/env bash
# spark-submit to YARN in cluster mode. The Python environment travels as an archive built once with
# venv-pack or conda-pack from `pip install .` (ENV_ARCHIVE), unpacked as ./env on every container;
# the config file is shipped with --files, so the driver reads it from its working directory.
#   ENV_ARCHIVE=hdfs:///envs/curate.tar.gz deploy/submit-yarn.sh run.yaml [--set key=value ...]
# Knobs: QUEUE (default), NUM_EXECUTORS (dynamic allocation when unset), EXECUTOR_CORES (8),
# EXECUTOR_MEMORY (16g), PYTHON_MEMORY (8g), DRIVER_MEMORY (8g), GPUS_PER_EXECUTOR / GPU_PER_TASK.
# run_dir and input must be URLs every container can reach (hdfs://, s3a://, ...).
set -euo pipefail
: "${ENV_ARCHIVE:?set ENV_ARCHIVE to a venv-pack/conda-pack archive of this package (make venv-pack)}"
DRIVER_PYTHON=./env/bin/python  # cluster mode: the driver runs in a container too
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[ $# -ge 1 ] || usage
config="$1"; shift

allocation=(--conf spark.dynamicAllocation.enabled=true --conf spark.dynamicAllocation.shuffleTracking.enabled=true)
if [ -n "${NUM_EXECUTORS:-}" ]; then
  allocation=(--num-executors "${NUM_EXECUTORS}")
fi

exec "${SPARK_SUBMIT}" \
  --master yarn \
  --deploy-mode cluster \
  --queue "${QUEUE:-default}" \
  --files "${config}" \
  --driver-memory "${DRIVER_MEMORY:-8g}" \
  --executor-cores "${EXECUTOR_CORES}" \
  --executor-memory "${EXECUTOR_MEMORY:-16g}" \
  --conf "spark.executor.pyspark.memory=${PYTHON_MEMORY:-8g}" \
  --conf "spark.yarn.appMasterEnv.PYSPARK_PYTHON=${PYTHON}" \
  "${allocation[@]}" \
  "${COMMON_CONF[@]}" \
  "${SHIP_CONF[@]}" \
  "${GPU_CONF[@]}" \
  "${JOB}" --config "$(basename "${config}")" "$@"
