"""Config fields that carry their own one-line documentation (read by `curate config`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

_MISSING: Any = dataclasses.MISSING


def setting(default: Any = _MISSING, doc: str = "", *, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with a default (or a `factory` for mutable ones) and its meaning in `doc`."""
    metadata = {"doc": doc}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_doc(f: dataclasses.Field) -> str:
    """The one-line meaning of a config field ('' when it has none)."""
    return str(f.metadata.get("doc", ""))
