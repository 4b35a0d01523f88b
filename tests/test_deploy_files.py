"""deploy/ without docker or a cluster: Dockerfile syntax, YAML, shell syntax, the Airflow DAG, the
spark-submit command lines the wrappers build, and every repository path and entry point they name."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.cli import build_parser
from pipeline.core.config import config_from_dict

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
IMAGE_HOME = "/opt/curate"  # WORKDIR of both images: the repository's files are copied there
DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.cuda"]
SCRIPTS = sorted(DEPLOY.glob("*.sh")) + sorted(DEPLOY.glob("k8s/*.sh"))
WRAPPERS = ["submit-local.sh", "submit-standalone.sh", "submit-yarn.sh", "submit-k8s.sh"]
INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
                "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
# a repository path written as /opt/curate/..., ${CURATE_HOME}/..., {CURATE_HOME}/... or top-folder/...
PATH_REF = re.compile(r"(?:/opt/curate/|\$\{?CURATE_HOME\}?/|\{CURATE_HOME\}/|(?<![\w/.${}-])(?=(?:deploy|jobs|pipeline|"
                      r"schemas|tests|bench|examples)/))([\w./-]*[\w])")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        out.append((keyword, args.strip()))
        pending = ""
    assert not pending, f"{dockerfile.name}: ends inside a continued line"
    return out


def repo_paths(text: str) -> set[str]:
    return {m.group(1) for m in PATH_REF.finditer(text) if "://" not in text[max(0, m.start() - 8):m.start()]}


def subcommands() -> set[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return set(sub.choices)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_syntax_and_what_it_names_exists(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    assert steps[0][0] == "FROM" and steps[0][1]
    for keyword, args in steps:
        assert keyword in INSTRUCTIONS and keyword == keyword.upper(), keyword
        assert args, f"{keyword} without arguments"
    workdirs = [args for keyword, args in steps if keyword == "WORKDIR"]
    assert workdirs == [IMAGE_HOME]
    for keyword, args in steps:
        if keyword in ("COPY", "ADD"):
            *sources, _ = shlex.split(args)
            assert sources and all((ROOT / s).exists() for s in sources), args
        if keyword in ("ENTRYPOINT", "CMD"):
            argv = json.loads(args)  # exec form
            assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
            if argv[0].startswith(f"{IMAGE_HOME}/"):
                target = ROOT / argv[0][len(IMAGE_HOME) + 1:]
                assert target.is_file() and os.access(target, os.X_OK), argv[0]
            elif argv[0] == "curate":
                assert argv[1] in subcommands() or argv[1].startswith("-")
        if keyword in ("ENV", "ARG"):
            assert all("=" in pair for pair in shlex.split(args)), args
    installs = [args for keyword, args in steps if keyword == "RUN" and "pip install" in args]
    assert installs and all(" ." in a or "'.[" in a for a in installs[:1])
    copied = {shlex.split(args)[0] for keyword, args in steps if keyword == "COPY"}
    assert {"pipeline", "schemas", "jobs", "deploy"} <= copied  # the packages and the job file


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_shell_scripts_parse_and_are_executable(script: Path) -> None:
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert script.read_text().startswith("#!/usr/bin/env bash")
    assert os.access(script, os.X_OK) or script.name == "common.sh"


def submit_argv(wrapper: str, tmp_path: Path, **env: str) -> list[str]:
    """The spark-submit command line a wrapper runs (spark-submit replaced by a script that prints it)."""
    printer = tmp_path / "print-argv"
    printer.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    printer.chmod(0o755)
    run_env = {**os.environ, "SPARK_SUBMIT": str(printer), "MASTER": "spark://master:7077",
               "K8S_API": "https://k8s:6443", "IMAGE": "curate:test",
               **({"ENV_ARCHIVE": "env.tgz"} if wrapper == "submit-yarn.sh" else {}), **env}
    done = subprocess.run([str(DEPLOY / wrapper), "/etc/curate/run.yaml", "--set", "seed=1"], env=run_env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def confs(argv: list[str]) -> dict[str, str]:
    pairs = [argv[i + 1] for i, a in enumerate(argv) if a == "--conf"]
    assert all("=" in p for p in pairs), pairs
    return dict(p.split("=", 1) for p in pairs)


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_submit_wrappers_build_a_spark_submit_of_the_job(wrapper: str, tmp_path: Path) -> None:
    argv = submit_argv(wrapper, tmp_path)
    job = next(a for a in argv if a.endswith("jobs/curate.py"))
    assert argv[argv.index(job) + 1:] in (["--config", "/etc/curate/run.yaml", "--set", "seed=1"],
                                          ["--config", "run.yaml", "--set", "seed=1"])  # yarn ships the file
    path = job.removeprefix("local://")
    if path.startswith(f"{IMAGE_HOME}/"):  # inside the image (k8s)
        assert path == f"{IMAGE_HOME}/jobs/curate.py"
    else:
        assert Path(path).samefile(ROOT / "jobs" / "curate.py")
    assert confs(argv)["spark.sql.execution.arrow.pyspark.enabled"] == "true"
    master = argv[argv.index("--master") + 1]
    assert master == {"submit-local.sh": "local[*]", "submit-standalone.sh": "spark://master:7077", "submit-yarn.sh": "yarn",
                      "submit-k8s.sh": "k8s://https://k8s:6443"}[wrapper]
    assert not any(k.startswith("spark.executor.resource.gpu") for k in confs(argv))


def test_shipping_knobs_add_py_files_or_the_packed_venv(tmp_path: Path) -> None:
    plain = submit_argv("submit-standalone.sh", tmp_path)
    assert "--py-files" not in plain and "--archives" not in plain
    argv = submit_argv("submit-standalone.sh", tmp_path, PY_FILES="dist/curate_pipeline.zip", PYTHON="/usr/bin/python3")
    assert argv[argv.index("--py-files") + 1] == "dist/curate_pipeline.zip"
    assert confs(argv)["spark.pyspark.python"] == confs(argv)["spark.pyspark.driver.python"] == "/usr/bin/python3"
    argv = submit_argv("submit-standalone.sh", tmp_path, ENV_ARCHIVE="dist/curate-env.tar.gz",
                       DRIVER_PYTHON="/opt/venv/bin/python")
    assert argv[argv.index("--archives") + 1] == "dist/curate-env.tar.gz#env"
    assert (confs(argv)["spark.pyspark.python"], confs(argv)["spark.pyspark.driver.python"]) == (
        "./env/bin/python", "/opt/venv/bin/python")
    yarn = submit_argv("submit-yarn.sh", tmp_path)
    assert yarn.count("--archives") == 1 and yarn[yarn.index("--archives") + 1] == "env.tgz#env"
    assert confs(yarn)["spark.pyspark.python"] == confs(yarn)["spark.pyspark.driver.python"] == "./env/bin/python"


@pytest.mark.parametrize("wrapper", ["submit-standalone.sh", "submit-yarn.sh", "submit-k8s.sh"])
def test_gpu_scheduling_confs_and_discovery_script(wrapper: str, tmp_path: Path) -> None:
    conf = confs(submit_argv(wrapper, tmp_path, GPUS_PER_EXECUTOR="1", EXECUTOR_CORES="8"))
    assert conf["spark.executor.resource.gpu.amount"] == "1"
    assert float(conf["spark.task.resource.gpu.amount"]) == 0.125
    script = conf["spark.executor.resource.gpu.discoveryScript"]
    local = ROOT / script[len(IMAGE_HOME) + 1:] if script.startswith(f"{IMAGE_HOME}/") else Path(script)
    assert local.samefile(DEPLOY / "gpu_discovery.sh")
    if wrapper == "submit-k8s.sh":
        assert conf["spark.executor.resource.gpu.vendor"] == "nvidia.com"


def test_gpu_discovery_script_prints_a_resource_json() -> None:
    out = subprocess.run([str(DEPLOY / "gpu_discovery.sh")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    found = json.loads(out.stdout)
    assert found["name"] == "gpu" and isinstance(found["addresses"], list)


def test_sparkapplication_manifest(tmp_path: Path) -> None:
    config_map, app = yaml.safe_load_all((DEPLOY / "k8s" / "sparkapplication.yaml").read_text())
    assert (config_map["kind"], app["kind"]) == ("ConfigMap", "SparkApplication")
    spec = app["spec"]
    assert app["apiVersion"] == "sparkoperator.k8s.io/v1beta2" and spec["type"] == "Python"
    assert spec["mainApplicationFile"] == f"local://{IMAGE_HOME}/jobs/curate.py"
    config_path = spec["arguments"][spec["arguments"].index("--config") + 1]
    mounts = {m["name"]: m["mountPath"] for m in spec["driver"]["volumeMounts"]}
    assert Path(config_path).parent.as_posix() == mounts["run-config"]
    assert Path(config_path).name in config_map["data"]
    assert {v["name"] for v in spec["volumes"]} >= set(mounts)
    conf = spec["sparkConf"]
    assert conf["spark.executor.resource.gpu.discoveryScript"] == f"{IMAGE_HOME}/deploy/gpu_discovery.sh"
    assert float(conf["spark.task.resource.gpu.amount"]) * spec["executor"]["cores"] == float(
        conf["spark.executor.resource.gpu.amount"])
    assert spec["executor"]["gpu"]["quantity"] == int(conf["spark.executor.resource.gpu.amount"])
    # the run config in the ConfigMap is a valid curate config (its checkpoint path swapped for a real file)
    run = yaml.safe_load(config_map["data"][Path(config_path).name])
    (tmp_path / "model.pt").write_bytes(b"")
    run["embed"]["model"]["pretrained"] = str(tmp_path / "model.pt")
    config_from_dict(run)


def test_airflow_dag_parses_and_names_the_job() -> None:
    source = (DEPLOY / "airflow_dag.py").read_text()
    tree = ast.parse(source)
    calls = {node.func.id: node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    submit = calls["SparkSubmitOperator"]
    keywords = {k.arg: k.value for k in submit.keywords}
    assert {"application", "application_args", "conn_id", "conf"} <= set(keywords)
    assert "jobs/curate.py" in ast.unparse(keywords["application"])
    assert "--config" in ast.unparse(keywords["application_args"])
    for command in re.findall(r"\bcurate (\w+)", source):
        assert command in subcommands(), command


def test_every_repository_path_the_deploy_files_name_exists() -> None:
    files = [p for p in DEPLOY.rglob("*") if p.is_file()] + [ROOT / ".dockerignore"]
    named: dict[str, set[str]] = {}
    for f in files:
        for path in repo_paths(f.read_text()):
            named.setdefault(path, set()).add(f.relative_to(ROOT).as_posix())
    assert {"jobs/curate.py", "deploy/gpu_discovery.sh", "deploy/k8s/entrypoint.sh"} <= set(named)
    missing = {path: sorted(where) for path, where in named.items() if not (ROOT / path).exists()}
    assert not missing, missing
