"""What a failure means to the person running `curate`: one line naming what to do, and an exit code.

User and machine failures (a bad config or input, a full disk, a read-only or forbidden path, a
missing optional package, unreachable storage, an interrupt) are recognised by type, errno or, for
errors raised inside Spark tasks, the text Spark hands back; anything else is an internal error.
"""

from __future__ import annotations

import errno
import re
import signal
import threading
from dataclasses import dataclass
from typing import Any

from pipeline.core.config import ConfigError
from pipeline.core.io import InputError

EXIT_FAILURE = 2
EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 1


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop (SIGTERM); handled as Ctrl-C is."""


_interrupted = False  # set by the signal handlers: the JVM call an interrupt breaks may raise another error


def _on_signal(signum: int, frame: Any) -> None:
    global _interrupted
    _interrupted = True
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(f"stopped by {signal.Signals(signum).name}")


def handle_interrupts() -> None:
    """Make Ctrl-C (SIGINT) and SIGTERM raise KeyboardInterrupt in the main thread (the CLI's
    handling) and remember that they came."""
    global _interrupted
    _interrupted = False
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)


def rearm_interrupts() -> None:
    """After Spark started: take SIGINT back where `handle_interrupts` had it. PySpark's own
    handler calls into the JVM from inside the signal handler, which breaks the call in progress
    with a Py4J error instead of a clean KeyboardInterrupt (the CLI cancels the jobs itself)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is _on_signal:
        signal.signal(signal.SIGINT, _on_signal)


@dataclass(frozen=True)
class Failure:
    message: str
    exit_code: int
    trace_worth_keeping: bool  # the log's trace helps (not for a config or input mistake)


# errno -> (words Spark's copy of the error carries, what to say)
_OS_ERRORS = {
    errno.ENOSPC: ("No space left on device", "no space left on device{where}: free some space (or choose a run_dir "
                   "on a bigger disk) and rerun; finished stages and shards are kept"),
    errno.EFBIG: ("File too large", "a file outgrew the file-size limit{where} (ulimit -f): raise the limit and "
                  "rerun; finished stages and shards are kept"),
    errno.EROFS: ("Read-only file system", "cannot write{where}: the file system is read-only; choose a writable "
                  "run_dir"),
    errno.EACCES: ("Permission denied", "permission denied{where}: give this user access, or choose another path"),
    errno.EDQUOT: ("Disk quota exceeded", "disk quota exceeded{where}: free some space and rerun"),
}
_STORAGE = re.compile(r"EndpointConnectionError|Could not connect to the endpoint|ConnectTimeout|ClientConnectorError"
                      r"|NoCredentialsError|Unable to locate credentials|Connection refused|Name or service not known")


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def describe(err: BaseException) -> Failure:
    """The one line and exit code for `err`."""
    chain = _chain(err)
    if _interrupted or any(isinstance(e, KeyboardInterrupt) for e in chain):
        return Failure("interrupted; finished stages and shards are kept: rerun the same command to resume",
                       EXIT_INTERRUPTED, False)
    if isinstance(err, (ConfigError, InputError)):
        return Failure(str(err), EXIT_FAILURE, False)
    for e in chain:
        if isinstance(e, OSError) and e.errno in _OS_ERRORS:
            where = f" ({e.filename})" if e.filename else ""
            return Failure(_OS_ERRORS[e.errno][1].format(where=where), EXIT_FAILURE, True)
        if isinstance(e, ImportError):
            return Failure(f"a package this run needs is not installed ({_first_line(str(e))}): install the "
                           "extra that provides it, e.g. pip install 'curate-pipeline[s3]' for s3://", EXIT_FAILURE,
                           True)
    text = "\n".join(f"{type(e).__name__}: {e}" for e in chain)
    for _, (words, message) in _OS_ERRORS.items():
        if words in text:  # raised inside a Spark task: only its text comes back
            return Failure(message.format(where=""), EXIT_FAILURE, True)
    storage = _STORAGE.search(text)
    if storage:
        line = _first_line(text[storage.start():])
        return Failure(f"cannot reach the storage ({line}): check the endpoint URL, credentials and network, "
                       "then rerun", EXIT_FAILURE, True)
    return Failure(f"internal error: {type(err).__name__}: {_first_line(str(err))[:300]}", EXIT_INTERNAL, True)
