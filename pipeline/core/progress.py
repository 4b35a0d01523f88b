"""Progress lines with a rate and an ETA, for long work inside tasks and on the driver."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("curate")


def task_logger() -> logging.Logger:
    """The `curate` logger, given a stderr handler in processes (Spark workers) that have none."""
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


class RateLogger:
    """Counts units done and logs `label: done/total units, rate/s, ETA` at most every `every` s."""

    def __init__(self, label: str, total: int, unit: str = "images", every: float = 10.0) -> None:
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self.done = 0
        self.started = self.last = time.monotonic()
        self.log = task_logger()

    def __call__(self, n: int) -> None:
        """Add `n` finished units."""
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every or self.done >= self.total:
            self.last = now
            self.log.info("%s", self.line())

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-9)

    def line(self) -> str:
        rate = self.rate
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        return f"{self.label}: {self.done}/{self.total} {self.unit}, {rate:.1f} {self.unit}/s, ETA {eta:.0f}s"
