"""Failures a user or the machine causes end in one `curate: error:` line and exit 2 (130 for an
interrupt), with no traceback on the terminal, the trace in the run's log and no finished output lost.

The runs that must be interrupted or must fail inside Spark run `python -m pipeline.cli` in a child
process, as a terminal would: its stderr is exactly what the user sees.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from tests.checks import assert_accounted
from tests.reliability.pool import Pool, noise_image

ROOT = Path(__file__).resolve().parents[2]


def build_pool(root: Path, shards: int = 3, per_shard: int = 6, size: int = 48) -> dict[str, str | None]:
    """Shards of usable samples (noise images `size` px); returns sample_id -> None."""
    pool = Pool(root)
    for s in range(shards):
        shard = pool.shard(f"{s:05d}")
        for i in range(per_shard):
            shard.sample(f"{s}-{i}", noise_image(pool.next_seed(), size=size))
        shard.write()
    return dict(pool.expected)


def write_config(path: Path, pool: Path, run_dir: Path, **extra) -> Path:
    path.write_text(yaml.safe_dump({"input": str(pool), "run_dir": str(run_dir), "steps": ["exact_dedup"],
                                    "export": {"samples_per_shard": 5}, "spark": {"master": "local[2]"}, **extra}))
    return path


def curate(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def one_error_line(stderr: str, *fragments: str) -> str:
    """The terminal shows exactly one `curate: error:` line (holding every fragment) and no trace."""
    errors = [line for line in stderr.splitlines() if line.startswith("curate: error:")]
    assert len(errors) == 1, stderr[-3000:]
    assert "Traceback" not in stderr and "\tat " not in stderr and "Exception" not in stderr.replace(
        errors[0], ""), stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, finish(proc)[1][-3000:]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def manifests(run_dir: Path) -> dict[str, str]:
    """Each finished stage's manifest, as text."""
    return {p.parent.name: p.read_text() for p in run_dir.glob("*/_manifest.json") if (p.parent / "_SUCCESS").exists()}


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_second_run_and_an_interrupt_each_give_one_line_and_the_rerun_resumes(tmp_path: Path, stop: str) -> None:
    expected = build_pool(tmp_path / "pool")
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "run.yaml", tmp_path / "pool", run_dir)
    first = curate("run", str(config), start_new_session=True)  # its own process group, as a terminal job
    wait_for(run_dir / "ingest" / "_SUCCESS", first)

    code, err = finish(curate("run", str(config)))  # a second run on the same run dir, at the same time
    assert code == 2
    one_error_line(err, f"run dir '{run_dir}' is in use by another curate run (pid {first.pid} on "
                        f"{socket.gethostname()})")
    assert first.poll() is None, "the first run must still be running"
    done = manifests(run_dir)
    if stop == "ctrl-c":
        os.killpg(first.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
    else:
        first.send_signal(signal.SIGTERM)  # a scheduler stopping the job
    code, err = finish(first)
    assert code == 130
    line = one_error_line(err, "interrupted; finished stages and shards are kept: rerun the same command")
    log = Path(line.rsplit("(log: ", 1)[1].rstrip(")"))
    assert log.parent == run_dir / "logs" and "KeyboardInterrupt" in log.read_text()
    assert not (run_dir / "_lock.json").exists()
    assert {k: v for k, v in manifests(run_dir).items() if k in done} == done  # nothing finished was lost

    code, err = finish(curate("run", str(config)))
    assert code == 0, err[-3000:]
    assert {k: v for k, v in manifests(run_dir).items() if k in done} == done  # and it was reused
    assert_accounted(run_dir, expected)
    assert len(list((run_dir / "logs").glob("*.log"))) == 3  # each run writes its own log


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[tuple[dict, Callable[[], None]]]:
    """A folder on a tmpfs of `size` (root can mount one), else a 1 MiB file-size limit for the
    child process; yields the Popen arguments for a child that writes there, and a function that
    lifts the limit."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    try:
        if mounted:
            yield {}, lambda: subprocess.run(["mount", "-o", "remount,size=256m", str(path)], check=True)
        else:
            limit = {"preexec_fn": lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))}
            yield limit, limit.clear
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=True)


@pytest.mark.slow
def test_full_disk_is_one_line_and_the_rerun_finishes(tmp_path: Path) -> None:
    expected = build_pool(tmp_path / "pool", shards=2, per_shard=10, size=300)  # about 1.1 MB of images
    run_dir = tmp_path / "disk" / "run"
    with small_disk(tmp_path / "disk", "700k") as (limit, lift):
        config = write_config(tmp_path / "run.yaml", tmp_path / "pool", run_dir, export={"samples_per_shard": 20})
        code, err = finish(curate("run", str(config), **limit))
        assert code == 2
        one_error_line(err, "finished stages and shards are kept")
        assert not (run_dir / "export").exists() and not (run_dir / "_lock.json").exists()  # no partial shard left
        done = manifests(run_dir)
        assert "ingest" in done
        lift()
        code, err = finish(curate("run", str(config), **limit))
        assert code == 0, err[-3000:]
        assert {k: v for k, v in manifests(run_dir).items() if k in done} == done
        assert_accounted(run_dir, expected)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` read-only: a read-only bind mount where this process may mount, else no write bits."""
    bound = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode == 0
    if bound:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
    else:
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
    try:
        if not bound and os.access(path, os.W_OK):
            pytest.skip("cannot make a folder read-only here")
        yield
    finally:
        if bound:
            subprocess.run(["umount", str(path)], check=True)
        else:
            for p in [path, *path.rglob("*")]:
                p.chmod(p.stat().st_mode | 0o200)


def test_stale_lock_is_taken_over_and_a_read_only_run_dir_is_one_line(spark, tmp_path: Path, capsys) -> None:
    expected = build_pool(tmp_path / "pool", shards=2, per_shard=4)
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "run.yaml", tmp_path / "pool", run_dir)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run_dir.mkdir()
    (run_dir / "_lock.json").write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname()}))
    assert main(["run", str(config)]) == 0  # a lock left by a process that is gone is taken over
    assert not (run_dir / "_lock.json").exists()
    assert_accounted(run_dir, expected)
    before = manifests(run_dir)

    (run_dir / "_lock.json").write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    capsys.readouterr()
    assert main(["run", str(config)]) == 2  # held on another host: cannot be checked from here
    one_error_line(capsys.readouterr().err, "in use by another curate run (pid 1 on elsewhere)",
                   f"delete {run_dir}/_lock.json if that run is gone")
    (run_dir / "_lock.json").unlink()

    with read_only(run_dir):
        assert main(["run", str(config), "--set", "export.samples_per_shard=3"]) == 2
        one_error_line(capsys.readouterr().err, "choose a writable run_dir")
    assert manifests(run_dir) == before
    assert_accounted(run_dir, expected)


def test_input_and_config_mistakes_are_one_line_and_write_nothing(tmp_path: Path, capsys, monkeypatch) -> None:
    build_pool(tmp_path / "pool", shards=1, per_shard=2)
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "run.yaml", tmp_path / "pool", run_dir)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")  # so that the missing server, not credentials, fails
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    cases = [
        (["--set", "x=[1,"], "override 'x=[1,': the value is not valid YAML"),
        (["--set", f"input={tmp_path}/**/*.tar", "--set", f"run_dir={tmp_path}/pool/run"], "overlap"),
        (["--set", f"run_dir={tmp_path}"], "overlap"),
        (["--set", "input=s3://bucket/shards/*.tar", "--set", "storage_options.endpoint_url=http://127.0.0.1:9"],
         "cannot reach the storage"),
        ([], f"input shard '{tmp_path}/pool/x.tar' is a folder: remove or rename it"),
        ([], f"input shard '{tmp_path}/pool/x.tar' is not a readable file (a broken link?)"),
    ]
    for args, fragment in cases:
        if "is a folder" in fragment:
            (tmp_path / "pool" / "x.tar").mkdir()
        if "broken link" in fragment:
            (tmp_path / "pool" / "x.tar").rmdir()
            (tmp_path / "pool" / "x.tar").symlink_to(tmp_path / "nowhere.tar")
        assert main(["run", str(config), *args]) == 2, args
        one_error_line(capsys.readouterr().err, fragment)
        assert not run_dir.exists() and not (tmp_path / "pool" / "run").exists(), args
