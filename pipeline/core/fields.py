"""Config fields that carry their own one-line documentation (read by `curate config`) and say
whether they hold a path (read by the loader, which makes local paths absolute and checks them)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal

_MISSING: Any = dataclasses.MISSING

# "path": a local path or URL (made absolute); "existing": one that must exist when it names a
# local file or folder without wildcards; "checkpoint": a pretrained tag, or a checkpoint file
# that must exist when it looks like a path
PathKind = Literal["path", "existing", "checkpoint"]


def setting(default: Any = _MISSING, doc: str = "", *, factory: Callable[[], Any] | None = None,
            path: PathKind | None = None) -> Any:
    """A dataclass field with a default (or a `factory` for mutable ones), its meaning in `doc`
    and, for a field holding a path (or a list of them), its `path` kind."""
    metadata = {"doc": doc, "path": path}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_doc(f: dataclasses.Field) -> str:
    """The one-line meaning of a config field ('' when it has none)."""
    return str(f.metadata.get("doc", ""))


def path_kind(f: dataclasses.Field) -> PathKind | None:
    """The path kind of a config field (None when it holds no path)."""
    return f.metadata.get("path")
