#!/usr/bin/env bash
# spark-submit to Kubernetes in cluster mode, with the image built from deploy/Dockerfile (CPU) or
# deploy/Dockerfile.cuda (GPU). The code is inside the image at /opt/curate; the config file must be
# a path inside the driver pod (mount a ConfigMap, as deploy/k8s/sparkapplication.yaml does).
#   K8S_API=https://k8s.example.com:6443 IMAGE=registry/curate:0.1.0-cuda GPUS_PER_EXECUTOR=1 \
#     deploy/submit-k8s.sh /etc/curate/run.yaml [--set key=value ...]
# Knobs: NAMESPACE (curate), SERVICE_ACCOUNT (spark), NUM_EXECUTORS (4), EXECUTOR_CORES (8),
# EXECUTOR_MEMORY (16g), PYTHON_MEMORY (8g), DRIVER_MEMORY (8g), GPUS_PER_EXECUTOR / GPU_PER_TASK,
# CONFIG_MAP (curate-run-config, mounted at the config's folder), DATA_PVC (curate-data, at /data).
set -euo pipefail
CURATE_HOME=/opt/curate  # inside the image
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[ $# -ge 1 ] || usage
: "${K8S_API:?set K8S_API=https://<api server>:<port>}"
: "${IMAGE:?set IMAGE to an image built from deploy/Dockerfile or deploy/Dockerfile.cuda}"
config="$1"; shift
config_dir="$(dirname "${config}")"
ns="${NAMESPACE:-curate}"

k8s_gpu=()
if [ "${GPUS_PER_EXECUTOR:-0}" -gt 0 ]; then
  k8s_gpu=(--conf spark.executor.resource.gpu.vendor=nvidia.com)
fi

volumes=()
for role in driver executor; do
  volumes+=(
    --conf "spark.kubernetes.${role}.volumes.configMap.run-config.options.name=${CONFIG_MAP:-curate-run-config}"
    --conf "spark.kubernetes.${role}.volumes.configMap.run-config.mount.path=${config_dir}"
    --conf "spark.kubernetes.${role}.volumes.persistentVolumeClaim.data.options.claimName=${DATA_PVC:-curate-data}"
    --conf "spark.kubernetes.${role}.volumes.persistentVolumeClaim.data.mount.path=/data"
  )
done

exec "${SPARK_SUBMIT}" \
  --master "k8s://${K8S_API}" \
  --deploy-mode cluster \
  --name curate \
  --driver-memory "${DRIVER_MEMORY:-8g}" \
  --executor-cores "${EXECUTOR_CORES}" \
  --executor-memory "${EXECUTOR_MEMORY:-16g}" \
  --num-executors "${NUM_EXECUTORS:-4}" \
  --conf "spark.executor.pyspark.memory=${PYTHON_MEMORY:-8g}" \
  --conf "spark.kubernetes.namespace=${ns}" \
  --conf "spark.kubernetes.container.image=${IMAGE}" \
  --conf "spark.kubernetes.authenticate.driver.serviceAccountName=${SERVICE_ACCOUNT:-spark}" \
  "${volumes[@]}" \
  "${COMMON_CONF[@]}" \
  "${GPU_CONF[@]}" \
  "${k8s_gpu[@]}" \
  "local://${JOB}" --config "${config}" "$@"
