"""`curate`: run a curation job, make demo data, run one stage, show a run's status, verify its output."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

import pipeline
from pipeline.core.config import load_config
from pipeline.core.failures import EXIT_INTERRUPTED, describe, handle_interrupts
from pipeline.core.runlog import FORMAT as LOG_FORMAT
from pipeline.core.runlog import write_trace


def _not_py4j(record: logging.LogRecord) -> bool:
    """Py4J's own records (a call broken by Ctrl-C) belong in the run's log only."""
    return "py4j" not in record.pathname


class _NoTraceFormatter(logging.Formatter):
    """Terminal log lines without tracebacks: the run's log file has them."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def _configure_logging() -> None:
    logging.basicConfig(format=LOG_FORMAT, datefmt="%H:%M:%S")
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:
            handler.setFormatter(_NoTraceFormatter(LOG_FORMAT, "%H:%M:%S"))
            handler.addFilter(_not_py4j)
    logging.getLogger("curate").setLevel(logging.INFO)


def _cmd_run(args: argparse.Namespace) -> int:
    from pipeline.core.runner import plan_pipeline, run_pipeline

    cfg = load_config(args.config, args.set)
    if args.dry_run:
        for planned in plan_pipeline(cfg):
            print(f"{planned.name:<16} {'would run' if planned.action == 'run' else 'up to date, would skip'}")
        print(f"config and inputs are valid; nothing was written (run dir: {cfg.run_dir})")
        return 0
    result = run_pipeline(cfg, force=args.force)
    print(json.dumps(result.ledger, indent=2))
    print(f"output shards: {result.export_dir}")
    print(f"ledger:        {cfg.run_dir}/ledger.json")
    print(f"report:        {result.report}")
    print(f"train with:    --train-data '{result.pattern}' --train-num-samples {result.ledger['kept']}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from pipeline.core.config_reference import config_reference, format_reference

    print(format_reference(config_reference()))
    return 0


def _cmd_stage(args: argparse.Namespace) -> int:
    from pipeline.core.runner import run_one_stage

    manifest = run_one_stage(load_config(args.config, args.set), args.name)
    print(json.dumps(manifest["counts"], indent=2))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from pipeline.core.runner import run_status

    for row in run_status(args.run_dir):
        state = "done" if row["done"] else "incomplete"
        seconds = f"{row['seconds']:.1f}s" if row["seconds"] is not None else ""
        print(f"{row['stage']:<16} {state:<11} {seconds:>8}  {json.dumps(row['counts'] or {})[:200]}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from pipeline.verify import verify_run

    report = verify_run(args.run_dir)
    for problem in report.problems:
        print(f"curate verify: {problem}", file=sys.stderr)
    print(report.summary())
    return 0 if report.ok else 1


def _cmd_explain(args: argparse.Namespace) -> int:
    from pipeline.explain import explain, format_story

    stories = explain(args.run_dir, args.sample)
    if not stories:
        print(f"curate explain: no sample_id or uid '{args.sample}' in {args.run_dir}", file=sys.stderr)
        return 1
    print("\n\n".join(format_story(story) for story in stories))
    return 0


def _cmd_make_tiny_model(args: argparse.Namespace) -> int:
    from pipeline.models import make_tiny_checkpoint

    print(make_tiny_checkpoint(args.path, seed=args.seed))
    return 0


def _cmd_contain(args: argparse.Namespace) -> int:
    from pipeline.containment import format_table, measure_containment

    result = measure_containment(args.a, args.b, args.out, config=args.config, phash_threshold=args.phash_threshold,
                                 cosine_threshold=args.cosine_threshold)
    print(format_table(result))
    print(f"written: {args.out}/containment_by_shard.parquet, {args.out}/containment.json")
    return 0


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from pipeline.demo.generate import make_demo_data

    summary = make_demo_data(args.out_dir, n_samples=args.samples, seed=args.seed)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {pipeline.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run every stage of a config (finished stages are skipped)")
    run.add_argument("config")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    run.add_argument("--force", action="store_true", help="rerun every stage")
    run.add_argument("--dry-run", action="store_true",
                     help="validate the config and inputs, print the stages that would run or be skipped, write nothing")
    run.set_defaults(func=_cmd_run)

    config = sub.add_parser("config", help="print every config key with its type, default and meaning")
    config.set_defaults(func=_cmd_config)

    stage = sub.add_parser("stage", help="rerun one stage (earlier stages must be up to date)")
    stage.add_argument("name")
    stage.add_argument("config")
    stage.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    stage.set_defaults(func=_cmd_stage)

    status = sub.add_parser("status", help="show which stages of a run are done")
    status.add_argument("run_dir")
    status.set_defaults(func=_cmd_status)

    verify = sub.add_parser("verify", help="re-read a run's output shards and check them against its manifest")
    verify.add_argument("run_dir")
    verify.set_defaults(func=_cmd_verify)

    explain = sub.add_parser("explain", help="what each stage of a run decided about one sample, and why")
    explain.add_argument("run_dir")
    explain.add_argument("sample", metavar="SAMPLE_ID_OR_UID")
    explain.set_defaults(func=_cmd_explain)

    tiny = sub.add_parser("make-tiny-model", help="write the tiny test/demo open_clip checkpoint (arch curate-tiny)")
    tiny.add_argument("path")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=_cmd_make_tiny_model)

    contain = sub.add_parser("contain", help="how much of dataset A (img2dataset shards) is already in dataset B")
    contain.add_argument("a", metavar="A")
    contain.add_argument("b", metavar="B")
    contain.add_argument("--out", default="containment", help="output folder (also holds resumable scratch runs)")
    contain.add_argument("--config", help="run config whose spark/ingest/embed settings to use; embed.model "
                         "enables the semantic level")
    contain.add_argument("--phash-threshold", type=int, default=4)
    contain.add_argument("--cosine-threshold", type=float, default=0.95)
    contain.set_defaults(func=_cmd_contain)

    demo = sub.add_parser("demo-data", help="write a small img2dataset-format demo pool with known defects")
    demo.add_argument("out_dir")
    demo.add_argument("--samples", type=int, default=600)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo_data)
    return parser


def _stop_spark() -> None:
    """Cancel running Spark jobs and stop the session (after an interrupt)."""
    if "pyspark" not in sys.modules:
        return
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is None:
        return
    try:
        session.sparkContext.cancelAllJobs()
        session.stop()
    except Exception as err:  # the JVM may already be gone
        logging.getLogger("curate").debug("stopping Spark after an interrupt: %s", err)


def _fail(err: BaseException) -> int:
    """One `curate: error:` line naming what to do; the full trace goes to the run's log."""
    failure = describe(err)
    if failure.exit_code == EXIT_INTERRUPTED:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not break the clean stop
        _stop_spark()
    log_file = getattr(err, "curate_log", None)
    if log_file is None and failure.trace_worth_keeping:
        log_file = write_trace(err)
    named = failure.trace_worth_keeping or failure.exit_code == EXIT_INTERRUPTED
    where = f" (log: {log_file})" if log_file and named else ""
    print(f"curate: error: {failure.message}{where}", file=sys.stderr)
    return failure.exit_code


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `curate` console script. Every failure ends in one `curate: error:` line
    and exit code 2 (130 for Ctrl-C or SIGTERM; 1 for an internal error), the trace in the log."""
    _configure_logging()
    args = build_parser().parse_args(argv)
    in_main = threading.current_thread() is threading.main_thread()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    handle_interrupts()
    try:
        return args.func(args)
    except (Exception, KeyboardInterrupt) as err:
        return _fail(err)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
