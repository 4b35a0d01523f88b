"""The ledger: every input row ends kept, removed (stage -> reason) or quarantined (reason)."""

from __future__ import annotations

from typing import Any

from pipeline.core import io
from pipeline.core.stage import RunContext
from pipeline.core.tables import decisions_df, samples_df


class LedgerError(RuntimeError):
    """The counts do not add up: some sample was lost or counted twice."""


def build_ledger(ctx: RunContext, kept: int) -> dict[str, Any]:
    """Counts read back from the written tables (never from accumulators)."""
    samples = samples_df(ctx)
    quarantined = {
        r["quarantine_reason"]: r["count"]
        for r in samples.where("quarantine_reason IS NOT NULL").groupBy("quarantine_reason").count().collect()
    }
    removed: dict[str, dict[str, int]] = {}
    for stage in ctx.decision_stages:
        rows = decisions_df(ctx, stage).groupBy("reason").count().collect()
        removed[stage] = {r["reason"]: r["count"] for r in sorted(rows, key=lambda r: r["reason"])}
    return {
        "input": samples.count(),
        "kept": kept,
        "removed": removed,
        "quarantined": dict(sorted(quarantined.items())),
    }


def check_input(ctx: RunContext, ledger: dict[str, Any]) -> None:
    """Raise LedgerError unless the ledger's input is what ingest read (the sum of its shards'
    inputs: no shard's rows lost or written twice) and every sample id is counted once."""
    ingested = ctx.manifest("ingest")["counts"]["input"]
    if ledger["input"] != ingested:
        raise LedgerError(f"ledger input {ledger['input']} != the {ingested} samples ingest read")
    distinct = samples_df(ctx).select("sample_id").distinct().count()
    if distinct != ledger["input"]:
        raise LedgerError(f"{ledger['input'] - distinct} sample ids of the ingest table are repeated")


def check_ledger(ledger: dict[str, Any]) -> None:
    """Raise LedgerError unless input = kept + removed + quarantined."""
    removed = sum(sum(reasons.values()) for reasons in ledger["removed"].values())
    quarantined = sum(ledger["quarantined"].values())
    if ledger["input"] != ledger["kept"] + removed + quarantined:
        raise LedgerError(
            f"ledger does not balance: input {ledger['input']} != kept {ledger['kept']} "
            f"+ removed {removed} + quarantined {quarantined}"
        )


def write_ledger(ctx: RunContext, kept: int) -> dict[str, Any]:
    """Build, check and write `<run_dir>/ledger.json`; a ledger that does not balance, or whose
    input is not what ingest read, fails the run."""
    ledger = build_ledger(ctx, kept)
    io.write_json_atomic(f"{ctx.cfg.run_dir}/ledger.json", ledger)
    check_input(ctx, ledger)
    check_ledger(ledger)
    return ledger
