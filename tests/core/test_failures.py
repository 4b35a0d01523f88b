"""The one line and exit code for each kind of failure, from real exceptions."""

from __future__ import annotations

import errno
import os

import pytest

from pipeline.core.config import ConfigError
from pipeline.core.failures import EXIT_FAILURE, EXIT_INTERNAL, EXIT_INTERRUPTED, describe


def raised(err: BaseException, cause: BaseException | None = None) -> BaseException:
    try:
        try:
            if cause is not None:
                raise cause
        finally:
            raise err
    except BaseException as caught:  # noqa: BLE001  the exception as the CLI receives it
        return caught


@pytest.mark.parametrize(("code", "words"), [(errno.ENOSPC, "no space left on device (/x/y.tar)"),
                                             (errno.EROFS, "the file system is read-only"),
                                             (errno.EACCES, "permission denied (/x/y.tar)"),
                                             (errno.EFBIG, "file-size limit")])
def test_machine_failures_name_the_file_and_the_fix(code: int, words: str) -> None:
    failure = describe(raised(OSError(code, os.strerror(code), "/x/y.tar")))
    assert words in failure.message and failure.exit_code == EXIT_FAILURE


def test_errors_from_spark_tasks_are_recognised_by_their_text() -> None:
    spark_like = RuntimeError("Job aborted ... PythonException: OSError: [Errno 28] No space left on device")
    assert describe(raised(spark_like)).message.startswith("no space left on device")
    wrapped = raised(RuntimeError("An error occurred while calling o42.collect"), KeyboardInterrupt())
    assert describe(wrapped).exit_code == EXIT_INTERRUPTED  # an interrupt that broke a JVM call


def test_user_mistakes_are_their_own_message_and_bugs_are_internal() -> None:
    mistake = describe(raised(ConfigError("config key 'x': unknown key")))
    assert (mistake.message, mistake.exit_code, mistake.trace_worth_keeping) == ("config key 'x': unknown key",
                                                                                EXIT_FAILURE, False)
    bug = describe(raised(ZeroDivisionError("division by zero")))
    assert bug.message == "internal error: ZeroDivisionError: division by zero" and bug.exit_code == EXIT_INTERNAL
    assert "pip install" in describe(raised(ImportError("No module named 'langid'"))).message
