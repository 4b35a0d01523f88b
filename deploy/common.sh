#!/usr/bin/env bash
# Shared by the submit-*.sh wrappers (sourced, not run). Sets:
#   CURATE_HOME  the checkout or image folder holding jobs/ and deploy/ (the same path on every node)
#   JOB          the spark-submit application: jobs/curate.py
#   COMMON_CONF  --conf pairs every deployment wants (Arrow transfers, the Python executable)
#   GPU_CONF     GPU scheduling --conf pairs when GPUS_PER_EXECUTOR > 0, else empty
# Environment knobs (all optional): PYTHON, GPUS_PER_EXECUTOR, GPU_PER_TASK, GPU_DISCOVERY,
# EXECUTOR_CORES, SPARK_SUBMIT.
set -euo pipefail

CURATE_HOME="${CURATE_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
JOB="${CURATE_HOME}/jobs/curate.py"
SPARK_SUBMIT="${SPARK_SUBMIT:-spark-submit}"
PYTHON="${PYTHON:-python3}"
EXECUTOR_CORES="${EXECUTOR_CORES:-8}"

COMMON_CONF=(
  --conf spark.sql.execution.arrow.pyspark.enabled=true
  --conf "spark.pyspark.python=${PYTHON}"
  --conf "spark.pyspark.driver.python=${PYTHON}"
)

# Every task reserves GPU_PER_TASK of a GPU, CPU stages included: with the default 1/EXECUTOR_CORES
# all cores stay busy and the embed tasks of one executor share its GPU; with 1 an executor runs one
# task at a time. Each embed task binds to the GPU address Spark assigns it.
GPU_CONF=()
if [ "${GPUS_PER_EXECUTOR:-0}" -gt 0 ]; then
  GPU_PER_TASK="${GPU_PER_TASK:-$(awk -v c="${EXECUTOR_CORES}" -v g="${GPUS_PER_EXECUTOR}" 'BEGIN { printf "%.4g", g / c }')}"
  GPU_CONF=(
    --conf "spark.executor.resource.gpu.amount=${GPUS_PER_EXECUTOR}"
    --conf "spark.task.resource.gpu.amount=${GPU_PER_TASK}"
    --conf "spark.executor.resource.gpu.discoveryScript=${GPU_DISCOVERY:-${CURATE_HOME}/deploy/gpu_discovery.sh}"
  )
fi

usage() {
  echo "usage: $0 CONFIG.yaml [--set key=value ...] [--force]" >&2
  exit 2
}
