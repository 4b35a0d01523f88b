"""File-system helpers over fsspec: local paths and any fsspec URL (s3://, gs://, hdfs://, ...).

Every file the product opens goes through `filesystem`, which applies the run's storage options
(`storage_options` in the config: endpoint, region, anonymous access, profile). The driver sets
them with `use_storage`; Spark tasks read them from a job-local property that `use_storage` sets on
the SparkContext, so every task, on any executor, opens URLs the way the driver does.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
from typing import TYPE_CHECKING, Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from braceexpand import braceexpand

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


STORAGE_PROPERTY = "curate.storage_options"  # SparkContext local property: JSON of the options
# the extra that brings the fsspec implementation of a protocol; others name fsspec's own hint
EXTRAS = {"s3": "s3", "s3a": "s3"}

_driver_options: dict[str, dict[str, Any]] = {}
_task_options: tuple[str, dict[str, dict[str, Any]]] = ("{}", {})  # (JSON, parsed) last seen in a task


class InputError(ValueError):
    """The input location holds no usable shards, or cannot be read."""


def use_storage(options: dict[str, dict[str, Any]], spark: SparkSession | None = None) -> None:
    """Open URLs with these fsspec arguments per protocol (`StorageConfig.by_protocol()`), here and,
    with `spark`, in every task of the jobs this thread starts. The options hold no credentials."""
    global _driver_options
    _driver_options = {protocol: dict(kwargs) for protocol, kwargs in options.items()}
    if spark is not None:
        spark.sparkContext.setLocalProperty(STORAGE_PROPERTY, json.dumps(_driver_options, sort_keys=True))


def storage_options() -> dict[str, dict[str, Any]]:
    """The options in force: from the job's local property inside a Spark task, else the driver's."""
    global _task_options
    from pyspark import TaskContext  # here: importing pyspark is slow for commands that never start it

    task = TaskContext.get()
    if task is None:
        return _driver_options
    shared = task.getLocalProperty(STORAGE_PROPERTY) or "{}"
    if shared != _task_options[0]:
        _task_options = (shared, json.loads(shared))
    return _task_options[1]


def filesystem(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for `path` (with the storage options of its protocol) and the path as
    that filesystem spells it. A protocol whose implementation is not installed is an InputError
    naming what to install."""
    protocol = fsspec.core.split_protocol(path)[0] or "file"
    try:
        return fsspec.core.url_to_fs(path, **storage_options().get(protocol, {}))
    except ImportError as err:
        extra = EXTRAS.get(protocol)
        fix = f"pip install 'curate-pipeline[{extra}]'" if extra else str(err)
        raise InputError(f"'{path}': no fsspec filesystem for {protocol}:// is installed ({fix})") from None
    except ValueError as err:  # fsspec knows no implementation at all
        raise InputError(f"'{path}': {err}") from None


def with_protocol(fs: fsspec.AbstractFileSystem, path: str, like: str) -> str:
    """`path` as `fs` lists it, with the protocol put back when `like` (the user's spec) has one."""
    if "://" not in like:
        return path
    return fs.unstrip_protocol(path)


def list_shards(input_spec: str) -> list[str]:
    """Tar shards named by a directory, a glob or a brace pattern, sorted; raises InputError if none,
    or if a match is not a readable file (a folder or a broken link named `x.tar`)."""
    found: set[str] = set()
    for spec in braceexpand(input_spec):
        fs, path = filesystem(spec)
        if fs.isdir(path):
            matches = fs.glob(posixpath.join(path, "*.tar"), detail=True)
        elif any(ch in path for ch in "*?["):
            matches = fs.glob(path, detail=True)
        else:
            matches = {path: fs.info(path)} if fs.exists(path) or fs.isdir(path) else {}
        for match, info in matches.items():
            if not match.endswith(".tar"):
                continue
            if info.get("type") != "file" and not fs.isfile(match):  # links are checked where they lead
                kind = "a folder" if info.get("type") == "directory" else "not a readable file (a broken link?)"
                raise InputError(f"input shard '{with_protocol(fs, match, spec)}' is {kind}: remove or rename it")
            found.add(with_protocol(fs, match, spec))
    if not found:
        raise InputError(f"input '{input_spec}' matches no .tar shards")
    return sorted(found)


def shard_names(paths: list[str]) -> dict[str, str]:
    """Short stable names for shards: the path relative to their common folder, without '.tar'."""
    parents = [posixpath.dirname(p) for p in paths]
    root = posixpath.commonpath(parents) if len(set(parents)) > 1 else parents[0]
    return {p: posixpath.relpath(p, root)[: -len(".tar")] for p in paths}


def _modified(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A file's modification time as text ("" where the filesystem does not keep one)."""
    try:
        return fs.modified(path).isoformat()
    except (NotImplementedError, AttributeError, KeyError):
        return ""


_PART_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def part_name(shard_name: str) -> str:
    """A shard name as one flat file name, reversibly: every byte outside `[A-Za-z0-9._-]` (the
    folder separator `/`, and `~` itself) is written `~xx` in hex, so distinct shard names give
    distinct part names (`a/00000` -> `a~2f00000`, `a__00000` stays)."""
    return "".join(ch if ch in _PART_SAFE else "".join(f"~{b:02x}" for b in ch.encode()) for ch in shard_name)


def fingerprint_files(paths: list[str]) -> str:
    """A cheap fingerprint of input files: their paths, sizes and modification times (a changed,
    replaced or touched file changes it)."""
    h = hashlib.sha256()
    for p in sorted(paths):
        fs, path = filesystem(p)
        stamp = f"{fs.size(path)}\t{_modified(fs, path)}" if fs.exists(path) else "-1"
        h.update(f"{p}\t{stamp}\n".encode())
    return h.hexdigest()


def exists(path: str) -> bool:
    fs, p = filesystem(path)
    return fs.exists(p)


def remove(path: str) -> None:
    """Delete a file or a folder tree if present."""
    fs, p = filesystem(path)
    if fs.exists(p):
        fs.rm(p, recursive=True)


def makedirs(path: str) -> None:
    fs, p = filesystem(path)
    fs.makedirs(p, exist_ok=True)


def rename(src: str, dst: str) -> None:
    fs, s = filesystem(src)
    _, d = filesystem(dst)
    fs.mv(s, d, recursive=True)


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write to a temporary name beside `path`, then rename, so readers never see half a file."""
    fs, p = filesystem(path)
    fs.makedirs(posixpath.dirname(p), exist_ok=True)
    tmp = p + ".tmp"
    try:
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, p)
    except BaseException:  # a full disk, an interrupt: leave no half-written file behind
        try:
            if fs.exists(tmp):
                fs.rm(tmp)
        except OSError:
            pass
        raise


def write_json_atomic(path: str, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_bytes(path: str) -> bytes:
    """The whole content of a (small) file."""
    fs, p = filesystem(path)
    with fs.open(p, "rb") as f:
        return f.read()


def read_json(path: str) -> Any:
    """A JSON file's content."""
    return json.loads(read_bytes(path))


def write_parquet_atomic(path: str, table: pa.Table) -> None:
    """Parquet written deterministically (no timestamps) and atomically."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes_atomic(path, buf.getvalue())


def read_parquet_dir(path: str, schema: pa.Schema | None = None) -> pa.Table:
    """All Parquet files of a folder as one table, in file-name order."""
    fs, p = filesystem(path)
    files = sorted(f for f in fs.glob(posixpath.join(p, "*.parquet")))
    tables = [pq.read_table(f, filesystem=fs, schema=schema) for f in files]
    if not tables:
        return schema.empty_table() if schema is not None else pa.table({})
    return pa.concat_tables(tables)
