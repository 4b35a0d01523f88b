"""Shard-as-unit-of-work on Spark: exactly one task per group of rows, the group held in memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
from pyspark import RDD
from pyspark.sql import DataFrame

T = TypeVar("T")

GROUP = "_group"  # the int column of `run_grouped_tables`' input that names each row's group


def run_grouped(pairs: RDD, n_groups: int, fn: Callable[[int, list[Any]], dict[str, Any]]) -> list[dict[str, Any]]:
    """Call `fn(group, items)` once per group of `(group, item)` pairs, one Spark task per group.

    Groups are 0..n_groups-1; a group with no pairs is not called. Returns fn's results sorted by
    group. Items should be small (ids, offsets, captions): the payload a task reads itself.
    """
    if n_groups == 0:
        return []
    results = pairs.partitionBy(n_groups, lambda group: group).mapPartitions(lambda it: _call(fn, it)).collect()
    return [r for _, r in sorted(results, key=lambda gr: gr[0])]


BatchMap = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


def run_grouped_tables(df: DataFrame, n_groups: int, fn: Callable[[int, pa.Table], dict[str, Any]],
                       assign: BatchMap | None = None) -> list[dict[str, Any]]:
    """`run_grouped` over a DataFrame whose int column `_group` names each row's group: `fn(group,
    table)` gets the group's rows as one Arrow table (without `_group`, in no particular order).
    `assign`, if given, adds `_group` (and any other columns) to each partition's Arrow batches in
    the same pass.

    Rows travel as Arrow: each input partition sends one IPC stream per group it holds, so the
    shuffle carries a few large binary records instead of one pickled object per row.
    """
    def chunks(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return _group_chunks(assign(batches) if assign is not None else batches)

    pairs = df.mapInArrow(chunks, "group int, payload binary").rdd.map(tuple)
    return run_grouped(pairs, n_groups, lambda group, payloads: fn(group, _read_ipc(payloads)))


def _group_chunks(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """One (group, Arrow IPC stream) row per group of the partition's rows."""
    table = pa.Table.from_batches(list(batches))
    if table.num_rows == 0:
        return
    groups = table.column(GROUP).to_numpy()
    order = np.argsort(groups, kind="stable")
    table, groups = table.drop_columns([GROUP]).take(pa.array(order)), groups[order]
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    for start, end in zip(starts, [*starts[1:], len(groups)]):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table.slice(start, end - start))
        yield pa.record_batch({"group": pa.array([int(groups[start])], pa.int32()),
                               "payload": pa.array([sink.getvalue().to_pybytes()], pa.binary())})


def _read_ipc(payloads: list[bytes]) -> pa.Table:
    return pa.concat_tables([pa.ipc.open_stream(payload).read_all() for payload in payloads])


def _call(fn: Callable[[int, list[Any]], dict[str, Any]], items: Iterator[tuple[int, Any]]) -> Iterator:
    groups: dict[int, list[Any]] = {}
    for group, item in items:
        groups.setdefault(group, []).append(item)
    for group, members in sorted(groups.items()):
        yield group, fn(group, members)
