"""Shard-as-unit-of-work on Spark: exactly one task per group of rows, the group held in memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pyspark import RDD

T = TypeVar("T")


def run_grouped(pairs: RDD, n_groups: int, fn: Callable[[int, list[Any]], dict[str, Any]]) -> list[dict[str, Any]]:
    """Call `fn(group, items)` once per group of `(group, item)` pairs, one Spark task per group.

    Groups are 0..n_groups-1; a group with no pairs is not called. Returns fn's results sorted by
    group. Items should be small (ids, offsets, captions): the payload a task reads itself.
    """
    if n_groups == 0:
        return []
    results = pairs.partitionBy(n_groups, lambda group: group).mapPartitions(lambda it: _call(fn, it)).collect()
    return [r for _, r in sorted(results, key=lambda gr: gr[0])]


def _call(fn: Callable[[int, list[Any]], dict[str, Any]], items: Iterator[tuple[int, Any]]) -> Iterator:
    groups: dict[int, list[Any]] = {}
    for group, item in items:
        groups.setdefault(group, []).append(item)
    for group, members in sorted(groups.items()):
        yield group, fn(group, members)
