"""The code shipped to a cluster whose nodes don't have it: a standalone master and two workers on
127.0.0.1 whose executors run a Python that has every dependency but not the package.
`deploy/submit-standalone.sh` submits jobs/curate.py from a folder outside the checkout, shipping the
code (1) with `--py-files` and the zip `deploy/build-dist.sh` builds, (2) with `--archives` and a
venv-pack'ed venv holding the wheel, executors on its ./env/bin/python. Each run's export manifest
and shards equal a local-mode run's byte for byte. Without shipping, the job fails on the executors."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from pipeline.core.config import config_from_dict
from pipeline.core.runner import run_pipeline
from tests.reliability.standalone import SPARK_HOME, Standalone, start_standalone

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SITE_PACKAGES = sysconfig.get_paths()["purelib"]  # this venv's: the dependencies (and an editable hook)


def clean_env() -> dict[str, str]:
    """The environment of a machine that has never seen the checkout: no PYTHONPATH, nothing of this
    process's own Spark gateway, Spark from the pyspark install, loopback only."""
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and not k.startswith(("PYSPARK_", "_PYSPARK", "SPARK_"))}
    return {**env, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1"}


def venv_with_dependencies(venv: Path) -> Path:
    """A new venv whose sitecustomize appends this venv's site-packages to the path: every
    dependency, found after the standard library as installed packages are, and none of this venv's
    own .pth files run (the editable install's hook among them; venv-pack also refuses .pth links).
    Returns its python."""
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True, env=clean_env()).stdout.strip()
    Path(site, "sitecustomize.py").write_text(f"import sys\nsys.path.append({SITE_PACKAGES!r})\n")
    return python


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """An interpreter with every dependency, not the package."""
    python = venv_with_dependencies(tmp_path_factory.mktemp("bare") / "venv")
    probe = "import pyspark, torch, open_clip, faiss, scipy, yaml\ntry:\n import pipeline\nexcept ImportError: print('no')"
    out = subprocess.run([str(python), "-c", probe], cwd=python.parent, env=clean_env(), capture_output=True, text=True)
    assert out.stdout.strip() == "no", out.stderr
    return python


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([str(ROOT / "deploy" / "build-dist.sh"), str(out)], env={**clean_env(), "PYTHON": sys.executable},
                   check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def env_archive(dist: Path, tmp_path_factory) -> tuple[Path, Path]:
    """(archive, its venv's python): a venv with the wheel, packed by venv-pack. As deploy/pack-venv.sh
    does, except that the dependencies are this machine's, linked instead of copied (the archive is
    a few MB instead of several GB)."""
    base = tmp_path_factory.mktemp("envpack")
    python = venv_with_dependencies(base / "env")
    (wheel,) = dist.glob("curate_pipeline-*.whl")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   env=clean_env())
    archive = base / "curate-env.tar.gz"
    subprocess.run([str(Path(sys.executable).with_name("venv-pack")), "-q", "-p", str(base / "env"), "-o",
                    str(archive)], check=True)
    return archive, python


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Standalone:
    base = tmp_path_factory.mktemp("two-workers")
    cluster = start_standalone(base, cores=1, memory="12g", workers=2, env=clean_env())
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_checkpoint: Path) -> dict:
    from pipeline.demo.generate import make_demo_data

    base = tmp_path_factory.mktemp("job")
    make_demo_data(base / "demo", n_samples=150, samples_per_shard=50, seed=1)

    def config(run_dir: Path) -> dict:
        return {"input": str(base / "demo" / "shards"), "run_dir": str(run_dir), "seed": 3,
                "basic_filter": {"min_side": 32},
                "embed": {"enabled": True, "model": {"arch": "curate-tiny", "pretrained": str(tiny_checkpoint)},
                          "batch_size": 32},
                "export": {"samples_per_shard": 30, "max_shard_bytes": 120_000}}

    return {"base": base, "config": config}


@pytest.fixture(scope="module")
def local_export(job: dict, spark) -> Path:
    run_dir = job["base"] / "local-run"
    run_pipeline(config_from_dict(job["config"](run_dir)))
    return run_dir / "export"


def submit(cluster: Standalone, job: dict, name: str, knobs: dict[str, str]) -> tuple[subprocess.CompletedProcess, Path]:
    """deploy/submit-standalone.sh from a folder outside the checkout; (the process, the run dir)."""
    elsewhere = job["base"] / f"submit-{name}"
    elsewhere.mkdir()
    run_dir = job["base"] / f"{name}-run"
    (elsewhere / "run.yaml").write_text(yaml.safe_dump(job["config"](run_dir)))
    (elsewhere / "conf").mkdir()
    (elsewhere / "conf" / "spark-defaults.conf").write_text("spark.task.maxFailures 1\n")
    env = {**clean_env(), "MASTER": cluster.master_url, "SPARK_SUBMIT": str(SPARK_HOME / "bin" / "spark-submit"),
           "SPARK_CONF_DIR": str(elsewhere / "conf"), "EXECUTOR_CORES": "1", "EXECUTOR_MEMORY": "1g",
           "DRIVER_MEMORY": "2g", **knobs}
    proc = subprocess.run([str(ROOT / "deploy" / "submit-standalone.sh"), "run.yaml"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=900)
    return proc, run_dir


def assert_same_output(run_dir: Path, local_export: Path) -> None:
    export = run_dir / "export"
    assert (export / "manifest.json").read_bytes() == (local_export / "manifest.json").read_bytes()
    tars = sorted(p.name for p in local_export.glob("*.tar"))
    assert len(tars) >= 3 and sorted(p.name for p in export.glob("*.tar")) == tars
    assert all((export / t).read_bytes() == (local_export / t).read_bytes() for t in tars)


def executors_of_last_app(cluster: Standalone) -> list[str]:
    app = max(cluster.work_dir.glob("app-*"), key=lambda p: p.stat().st_mtime)
    return sorted(p.name for p in app.iterdir() if (p / "stderr").exists())


def test_without_shipping_the_code_the_executors_cannot_import_it(cluster, job, bare_python) -> None:
    proc, _ = submit(cluster, job, "unshipped", {"PYTHON": str(bare_python), "DRIVER_PYTHON": sys.executable})
    assert proc.returncode != 0
    assert "No module named 'pipeline'" in proc.stdout + proc.stderr


def test_py_files_with_the_built_zip(cluster, job, bare_python, dist, local_export) -> None:
    proc, run_dir = submit(cluster, job, "py-files",
                           {"PYTHON": str(bare_python), "PY_FILES": str(dist / "curate_pipeline.zip")})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert len(executors_of_last_app(cluster)) == 2  # one executor per worker
    assert_same_output(run_dir, local_export)


def test_archives_with_a_packed_venv(cluster, job, env_archive, local_export) -> None:
    archive, venv_python = env_archive
    proc, run_dir = submit(cluster, job, "archives", {"ENV_ARCHIVE": str(archive), "DRIVER_PYTHON": str(venv_python)})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert len(executors_of_last_app(cluster)) == 2
    unpacked = list(cluster.work_dir.glob("app-*/**/env/bin/python"))
    assert unpacked, "no executor unpacked the archive"
    assert_same_output(run_dir, local_export)
