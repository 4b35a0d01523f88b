"""Each run's log file, `<run_dir>/logs/<UTC time>-<pid>.log`: every log record, Spark's own log
lines and the full trace of a failure, which the terminal shows as one line."""

from __future__ import annotations

import logging
import os
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

LOGS = "logs"
FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class _LogFile(logging.FileHandler):
    """A run log that drops records it cannot write (a full disk) instead of printing a trace."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def _open_log(folder: str) -> tuple[str, logging.Handler]:
    os.makedirs(folder, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = os.path.join(folder, f"{stamp}-{os.getpid()}.log")
    return path, _LogFile(path, encoding="utf-8")


def start_run_log(run_dir: str | None) -> str:
    """Send every log record (the root logger's) to a new file under `<run_dir>/logs/`, or under the
    temp folder when the run dir is remote, unknown or not writable; tell Spark's JVM (started after
    this) to log there too. Returns the file's path."""
    folder = os.path.join(run_dir, LOGS) if run_dir and "://" not in run_dir else None
    try:
        if folder is None:
            raise OSError("no local run dir")
        path, handler = _open_log(folder)
    except OSError:
        path, handler = _open_log(os.path.join(tempfile.gettempdir(), "curate-logs"))
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(logging.DEBUG)
    stop_run_log()
    handler.curate_run_log = True  # type: ignore[attr-defined]
    logging.getLogger().addHandler(handler)
    os.environ["CURATE_LOG_FILE"] = path  # read by spark.get_spark for the JVM's log4j file appender
    return path


def stop_run_log() -> None:
    """Close the run log file (records go to the terminal only again)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "curate_run_log", False)]:
        root.removeHandler(handler)
        handler.close()
    os.environ.pop("CURATE_LOG_FILE", None)


def write_trace(err: BaseException, path: str | None = None) -> str:
    """Append the full trace of `err` to the log file `path` (a new one in the temp folder if None);
    return the file's path."""
    text = "".join(traceback.format_exception(err))
    if path is not None:
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(text)
            return path
        except OSError:  # the disk that just filled up, say
            pass
    path = start_run_log(None)
    stop_run_log()
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
    return path


@contextmanager
def run_log(run_dir: str) -> Iterator[str]:
    """Log the block to a new run log file; a failure's full trace is appended to it, and the file
    is named on the exception (`err.curate_log`) for the one-line message."""
    path = start_run_log(run_dir)
    try:
        yield path
    except BaseException as err:
        write_trace(err, path)
        err.curate_log = path  # type: ignore[attr-defined]
        raise
    finally:
        stop_run_log()
