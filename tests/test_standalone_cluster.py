"""A real Spark cluster: a standalone master and worker on 127.0.0.1 started from the pyspark
installation, `spark-submit --master spark://... jobs/curate.py` as a separate process, and its
output compared byte for byte with the same config run in local mode."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyspark
import pytest
import yaml

from pipeline.core.config import config_from_dict
from pipeline.core.runner import run_pipeline

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SPARK_HOME = Path(pyspark.__file__).parent
COMPARED = ("*.tar", "*.parquet", "*_stats.json", "sizes.json", "manifest.json")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_env(work: Path) -> dict[str, str]:
    """The environment the cluster and spark-submit run in: this venv's Python and Spark, loopback only,
    and nothing of this pytest process's own Spark gateway."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_GATEWAY", "_PYSPARK", "SPARK_"))}
    env.update(SPARK_HOME=str(SPARK_HOME), PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", SPARK_LOCAL_IP="127.0.0.1",
               SPARK_WORKER_DIR=str(work / "worker"))
    return env


def master_state(web_port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/json/", timeout=2) as r:
            return json.loads(r.read())
    except OSError:
        return None


def wait_for(predicate, what: str, logs: list[Path], timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in logs if p.exists())
            pytest.fail(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    """Stop one process this test started, by its pid: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def standalone(tmp_path_factory, request) -> dict:
    """A running master + one worker (2 cores, 4 GB); both stopped by pid when the module ends."""
    work = tmp_path_factory.mktemp("standalone")
    env = cluster_env(work)
    port, web, worker_web = free_port(), free_port(), free_port()
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    logs = [work / "master.log", work / "worker.log"]

    def start(args: list[str], log: Path) -> subprocess.Popen:
        with log.open("wb") as out:
            proc = subprocess.Popen([spark_class, *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        request.addfinalizer(lambda: stop(proc))
        return proc

    start(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
           "--webui-port", str(web)], logs[0])
    wait_for(lambda: master_state(web) is not None, "the master to accept", logs)
    url = f"spark://127.0.0.1:{port}"
    start(["org.apache.spark.deploy.worker.Worker", url, "--cores", "2", "--memory", "4g", "--host", "127.0.0.1",
           "--webui-port", str(worker_web), "--work-dir", str(work / "worker")], logs[1])
    wait_for(lambda: (master_state(web) or {}).get("aliveworkers", 0) >= 1, "the worker to register", logs)
    return {"url": url, "web": web, "env": env, "work": work, "logs": logs}


def run_config(demo: Path, run_dir: Path, checkpoint: Path) -> dict:
    return {
        "input": str(demo / "shards"),
        "run_dir": str(run_dir),
        "seed": 3,
        "basic_filter": {"min_side": 32},
        "embed": {"enabled": True, "model": {"arch": "curate-tiny", "pretrained": str(checkpoint)}, "batch_size": 32},
        "export": {"samples_per_shard": 30, "max_shard_bytes": 120_000},
    }


def output_files(run_dir: Path) -> dict[str, bytes]:
    export = run_dir / "export"
    files = {p.name: p.read_bytes() for pattern in COMPARED for p in export.glob(pattern)}
    files["ledger.json"] = (run_dir / "ledger.json").read_bytes()
    return files


def test_spark_submit_on_a_standalone_cluster_matches_local_mode(
    standalone: dict, spark, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from pipeline.demo.generate import make_demo_data

    demo = tmp_path / "demo"
    make_demo_data(demo, n_samples=150, samples_per_shard=50, seed=1)
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump(run_config(demo, tmp_path / "cluster-run", tiny_checkpoint)))

    submit = subprocess.run(
        [str(VENV_BIN / "spark-submit"), "--master", standalone["url"], str(ROOT / "jobs" / "curate.py"),
         "--config", str(config)],
        env=standalone["env"], cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert submit.returncode == 0, submit.stderr[-4000:]
    assert f"report:        {tmp_path / 'cluster-run' / 'report.html'}" in submit.stdout

    apps = master_state(standalone["web"])["completedapps"]
    assert [app["name"] for app in apps] == ["curate"], apps  # the job ran on this cluster, not local[*]
    executor_logs = list((standalone["work"] / "worker").glob("app-*/*/stderr"))
    assert executor_logs, "the worker launched no executor"

    local = run_pipeline(config_from_dict(run_config(demo, tmp_path / "local-run", tiny_checkpoint)))
    assert local.manifests["embed"]["counts"]["embedded"] > 0
    cluster_files = output_files(tmp_path / "cluster-run")
    local_files = output_files(tmp_path / "local-run")
    assert sorted(cluster_files) == sorted(local_files)
    assert len([n for n in local_files if n.endswith(".tar")]) >= 3
    differing = [name for name in local_files if cluster_files[name] != local_files[name]]
    assert not differing, differing
