"""How many samples a pruning step keeps: a fraction or a count of its pool, raised to what a
planned training budget needs ("Scaling Laws for Data Filtering": pruning so hard that the kept
data repeats more than a few times during training costs more than it gains)."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.core.config import BudgetConfig

log = logging.getLogger("curate")


@dataclass(frozen=True)
class KeepPlan:
    """The keep count a step uses, and why."""

    pool: int  # samples the step chooses from
    requested: int | None  # from keep_fraction / keep_count (None: only a budget was given)
    budget_min: int | None  # ceil(samples_seen / max_repeats), when a budget was given
    n_keep: int
    fraction: float  # n_keep / pool (1.0 for an empty pool)
    reasoning: str

    def counts(self) -> dict[str, Any]:
        """What the stage manifest records."""
        return asdict(self)


def plan_keep(pool: int, fraction: float | None = None, count: int | None = None,
              budget: BudgetConfig | None = None) -> KeepPlan:
    """keep = max(requested, ceil(samples_seen / max_repeats)) capped at the pool, where requested
    is ceil(fraction * pool) or count. At least one of the three must be given."""
    if fraction is None and count is None and budget is None:
        raise ValueError("give a keep fraction, a keep count or a budget")
    requested = None
    if fraction is not None:
        requested = min(pool, math.ceil(fraction * pool - 1e-9))  # 1e-9: 0.3 * 1000 is 300, not 301
    elif count is not None:
        requested = min(pool, count)
    parts = [f"pool {pool}"]
    if requested is not None:
        parts.append(f"requested {requested}" + (f" (fraction {fraction:g})" if fraction is not None else ""))
    budget_min = None
    n_keep = requested or 0
    if budget is not None:
        budget_min = math.ceil(budget.samples_seen / budget.max_repeats)
        parts.append(f"budget of {budget.samples_seen} samples seen at <= {budget.max_repeats:g} repeats "
                     f"needs >= {budget_min}")
        if budget_min > n_keep:
            n_keep = budget_min
            parts.append(f"raised to {budget_min}")
        if n_keep > pool:
            parts.append(f"capped at the pool: each sample will be seen {budget.samples_seen / max(pool, 1):.2f} times")
    n_keep = min(n_keep, pool)
    frac = n_keep / pool if pool else 1.0
    parts.append(f"keep {n_keep} (fraction {frac:.4f})")
    return KeepPlan(pool, requested, budget_min, n_keep, frac, "; ".join(parts))


def log_plan(step: str, plan: KeepPlan) -> None:
    log.info("%s: %s", step, plan.reasoning)
