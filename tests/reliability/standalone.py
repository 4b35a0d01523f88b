"""A throwaway Spark standalone cluster (one master, one or more workers on 127.0.0.1) from the pyspark install,
and `spark-submit` against it. For tests; each process runs in its own session so it can be killed
with its children."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pyspark

SPARK_HOME = Path(pyspark.__file__).parent
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_env(log_dir: Path) -> dict[str, str]:
    """Environment for spark-class / spark-submit: this venv's Python, loopback only, logs in log_dir."""
    return {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(log_dir),
            "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}


@dataclass
class Standalone:
    """A running master + worker; `work_dir` holds the worker's per-application executor folders."""

    master_url: str
    ui_url: str
    work_dir: Path
    log_dir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    def alive_workers(self) -> int:
        try:
            with urllib.request.urlopen(f"{self.ui_url}/json/", timeout=2) as r:
                return sum(w["state"] == "ALIVE" for w in json.load(r)["workers"])
        except OSError:
            return 0

    def executor_pids(self) -> list[int]:
        """Executor JVMs this worker launched (their working folder is under work_dir)."""
        pids = []
        for proc in Path("/proc").iterdir():
            try:
                cmd = (proc / "cmdline").read_bytes()
                cwd = Path(os.readlink(proc / "cwd"))
                if b"CoarseGrainedExecutorBackend" in cmd and cwd.is_relative_to(self.work_dir):
                    pids.append(int(proc.name))
            except (OSError, ValueError):
                continue
        return pids

    def submit(self, args: list[str], log: Path, conf: dict[str, str] | None = None) -> subprocess.Popen:
        """spark-submit `args` (script and its arguments) to this cluster, output to `log`."""
        confs = [x for k, v in (conf or {}).items() for x in ("--conf", f"{k}={v}")]
        cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", self.master_url, *confs, *args]
        with log.open("wb") as out:
            return subprocess.Popen(cmd, cwd=ROOT, env=spark_env(self.log_dir), stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            kill_group(proc)


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal a process started with start_new_session=True and everything it started."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait()


def start_standalone(base: Path, cores: int = 2, memory: str = "3g", timeout: float = 90, workers: int = 1,
                     env: dict[str, str] | None = None) -> Standalone:
    """Start a master and `workers` workers with `cores` and `memory` each, in `env` (default
    `spark_env`); return once every worker is registered."""
    port, ui = free_port(), free_port()
    cluster = Standalone(f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui}", base / "work", base / "logs")
    cluster.work_dir.mkdir(parents=True, exist_ok=True)
    cluster.log_dir.mkdir(parents=True, exist_ok=True)
    daemons = {
        "master": ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                   "--webui-port", str(ui)],
    }
    for i in range(workers):
        daemons[f"worker{i if workers > 1 else ''}"] = [
            "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", str(cores), "--memory", memory,
            "--work-dir", str(cluster.work_dir), "--webui-port", str(free_port()), cluster.master_url]
    try:
        for name, args in daemons.items():
            with (cluster.log_dir / f"{name}.log").open("wb") as out:
                cluster.procs.append(subprocess.Popen([str(SPARK_HOME / "bin" / "spark-class"), *args],
                                                      env=env or spark_env(cluster.log_dir), stdout=out,
                                                      stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.time() + timeout
        while cluster.alive_workers() < workers:
            if time.time() > deadline or any(p.poll() is not None for p in cluster.procs):
                raise RuntimeError(f"standalone cluster did not start; see {cluster.log_dir}")
            time.sleep(0.5)
    except BaseException:
        cluster.stop()
        raise
    return cluster
