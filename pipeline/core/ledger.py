"""The ledger: every input row ends kept, removed (stage -> reason) or quarantined (reason)."""

from __future__ import annotations

from typing import Any

from pyspark.sql import functions as F

from pipeline.core import io
from pipeline.core.stage import RunContext
from pipeline.core.tables import decisions_df, samples_df


class LedgerError(RuntimeError):
    """The counts do not add up: some sample was lost or counted twice."""


def build_ledger(ctx: RunContext, kept: int) -> dict[str, Any]:
    """The counts the stage manifests hold (they were read back from the written tables, never from
    accumulators): ingest's input and quarantined rows, each decision stage's removals per reason."""
    ingest = ctx.manifest("ingest")["counts"]
    removed = {stage: dict(sorted(ctx.manifest(stage)["counts"]["removed"].items())) for stage in ctx.decision_stages}
    return {
        "input": ingest["input"],
        "kept": kept,
        "removed": removed,
        "quarantined": dict(sorted(ingest["quarantined"].items())),
    }


def check_tables(ctx: RunContext, ledger: dict[str, Any]) -> None:
    """Raise LedgerError unless the tables hold what the ledger says: one Spark job counts the
    ingest rows by quarantine reason and every decision stage's rows by reason, one more checks
    that every sample id of the ingest table is counted once."""
    rows = samples_df(ctx).select(F.lit(None).cast("string").alias("stage"), F.col("quarantine_reason").alias("reason"))
    for stage in ctx.decision_stages:
        rows = rows.unionByName(decisions_df(ctx, stage).select(F.lit(stage).alias("stage"), "reason"))
    counted = {(r["stage"], r["reason"]): r["count"] for r in rows.groupBy("stage", "reason").count().collect()}
    want = {(None, reason): n for reason, n in ledger["quarantined"].items()}
    want |= {(stage, reason): n for stage, reasons in ledger["removed"].items() for reason, n in reasons.items() if n}
    found = {key: n for key, n in counted.items() if key != (None, None)}
    samples = sum(n for (stage, _), n in counted.items() if stage is None)
    if found != want or samples != ledger["input"]:
        raise LedgerError(f"the tables do not hold what the manifests say: tables {samples} samples, {found}; "
                          f"manifests {ledger['input']} samples, {want}")
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
    """Build, write and check `<run_dir>/ledger.json`; a ledger that does not balance, or that the
    tables contradict, fails the run."""
    ledger = build_ledger(ctx, kept)
    io.write_json_atomic(f"{ctx.cfg.run_dir}/ledger.json", ledger)
    check_ledger(ledger)
    check_tables(ctx, ledger)
    return ledger
