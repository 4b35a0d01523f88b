"""Secrets (S3 keys, tokens, passwords) come from the environment or Spark conf and are never
written: anything saved or printed from a config goes through `redacted` first."""

from __future__ import annotations

import re
from typing import Any

# Spark's own spark.redaction.regex, plus bare `key` words (fs.azure.account.key.*) and credentials.
SECRET_KEY = re.compile(r"secret|password|passwd|token|credential|private|access[._]?key|(^|[._])key([._]|$)",
                        re.IGNORECASE)
REDACTED = "<redacted>"


def is_secret_key(key: str) -> bool:
    """True for a config or Spark conf key whose value must never be written out."""
    return bool(SECRET_KEY.search(key))


def redacted(data: Any) -> Any:
    """A copy of plain data (dicts, lists, scalars) with the value of every secret-named key replaced."""
    if isinstance(data, dict):
        return {k: REDACTED if isinstance(k, str) and is_secret_key(k) else redacted(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redacted(v) for v in data]
    return data
