#!/usr/bin/env bash
# Container entrypoint of the curate images (deploy/Dockerfile, deploy/Dockerfile.cuda).
# Spark on Kubernetes starts pods with `driver ...` or `executor`, as the apache/spark images expect:
#   driver ARGS    spark-submit in client mode inside the driver pod, bound to the pod's address
#   executor       the Kubernetes executor backend, configured by the SPARK_* variables Spark sets
#   anything else  run as given (e.g. `curate run /etc/curate/run.yaml`, `bash`)
set -euo pipefail

: "${SPARK_HOME:?SPARK_HOME must point at the Spark installation (the pyspark package folder)}"

# Java options Spark passes to executors as SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ... in that order.
executor_java_opts() {
  env | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n | sed 's/^[^=]*=//' || true
}

case "${1:-}" in
  driver)
    shift
    exec tini -s -- "${SPARK_HOME}/bin/spark-submit" \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS}" \
      --deploy-mode client \
      "$@"
    ;;
  executor)
    shift
    mapfile -t java_opts < <(executor_java_opts)
    classpath="${SPARK_HOME}/conf:${SPARK_HOME}/jars/*${SPARK_EXTRA_CLASSPATH:+:${SPARK_EXTRA_CLASSPATH}}"
    exec tini -s -- java "${java_opts[@]}" \
      "-Xms${SPARK_EXECUTOR_MEMORY}" "-Xmx${SPARK_EXECUTOR_MEMORY}" \
      -cp "${classpath}" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "${SPARK_DRIVER_URL}" \
      --executor-id "${SPARK_EXECUTOR_ID}" \
      --cores "${SPARK_EXECUTOR_CORES}" \
      --app-id "${SPARK_APPLICATION_ID}" \
      --hostname "${SPARK_EXECUTOR_POD_IP}" \
      --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID}" \
      --podName "${SPARK_EXECUTOR_POD_NAME}"
    ;;
  *)
    exec tini -s -- "$@"
    ;;
esac
