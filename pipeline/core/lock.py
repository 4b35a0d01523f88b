"""One run per run dir: `<run_dir>/_lock.json` (pid, host) held while a run writes there.

The lock file is created exclusively (`O_EXCL`), so of two runs started at once exactly one gets it.
A lock left by a process that no longer exists on this host (killed, machine rebooted) is stale:
it is moved aside atomically (only one contender succeeds) and taken over. A lock held by a live
process, or by another host (whose processes cannot be checked from here), refuses the run with one
message naming the holder. On a remote file system (s3://, ...) there is no exclusive create: the
lock is written if absent, which guards against a second run started later, not at the same instant.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pipeline.core import io

LOCK = "_lock.json"


class RunLocked(io.InputError):
    """Another run holds the run dir."""


def _holder(path: str) -> dict[str, Any] | None:
    try:
        return io.read_json(path)
    except FileNotFoundError:
        return None
    except ValueError:
        return {}  # being written, or garbled: treated as held by an unknown run


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _stale(holder: dict[str, Any]) -> bool:
    """The holder is a process of this host that no longer exists."""
    pid = holder.get("pid")
    return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid)


def _create_local(path: str, body: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(body)
    return True


def acquire(run_dir: str) -> str:
    """Take the run dir's lock (creating the run dir); RunLocked if a live run holds it."""
    io.makedirs(run_dir)
    path = f"{run_dir.rstrip('/')}/{LOCK}"
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time()}
    body = (json.dumps(me, sort_keys=True) + "\n").encode()
    local = "://" not in run_dir
    for _ in range(3):
        if local and _create_local(path, body):
            return path
        holder = _holder(path)
        if holder is None:
            if not local:
                io.write_bytes_atomic(path, body)
                return path
            continue  # released meanwhile: try again
        if not _stale(holder):
            who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
            raise RunLocked(f"run dir '{run_dir}' is in use by another curate run ({who}); wait for it to "
                            f"finish, or delete {path} if that run is gone")
        try:  # stale: move it aside (atomic, so one contender wins), then retry the exclusive create
            if local:
                os.rename(path, f"{path}.stale.{os.getpid()}")
                os.remove(f"{path}.stale.{os.getpid()}")
            else:
                io.remove(path)
        except FileNotFoundError:
            pass  # another run took it over first
    raise RunLocked(f"run dir '{run_dir}': could not take its lock {path}; retry")


def release(path: str) -> None:
    """Remove the lock if this process still holds it."""
    holder = _holder(path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        io.remove(path)


@contextmanager
def run_lock(run_dir: str) -> Iterator[None]:
    """Hold the run dir's lock for the duration of the block."""
    path = acquire(run_dir)
    try:
        yield
    finally:
        release(path)
