"""The reference of every config key (type, default, meaning), generated from the config classes."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.core.config import RunConfig
from pipeline.core.fields import field_doc


@dataclass(frozen=True)
class KeyDoc:
    """One config key: dotted name, type, default (as YAML would write it) and one-line meaning."""

    key: str
    type: str
    default: str
    doc: str


def type_text(tp: Any) -> str:
    """A readable name of a field annotation: `int`, `float | null`, `one of a|b`, `list of str`."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + "|".join(str(choice) for choice in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if arg is type(None) else type_text(arg) for arg in typing.get_args(tp))
    if origin in (tuple, list):
        return f"list of {type_text(typing.get_args(tp)[0])}"
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        return f"mapping {type_text(key_tp)} -> {type_text(value_tp)}"
    if dataclasses.is_dataclass(tp):
        return "section"
    return getattr(tp, "__name__", str(tp))


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if dataclasses.is_dataclass(value):
        return ""
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _section_class(tp: Any) -> type | None:
    """The dataclass a field holds (directly or as `X | None`), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    options = [arg for arg in typing.get_args(tp) if dataclasses.is_dataclass(arg)]
    return options[0] if options else None


def config_reference(cls: type = RunConfig, prefix: str = "") -> list[KeyDoc]:
    """Every key of `cls` and of the sections it holds, depth first, in declaration order."""
    hints = typing.get_type_hints(cls)
    rows: list[KeyDoc] = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        rows.append(KeyDoc(key, type_text(hints[f.name]), _default_text(f), field_doc(f)))
        section = _section_class(hints[f.name])
        if section is not None:
            rows.extend(config_reference(section, f"{key}."))
    return rows


def format_reference(rows: list[KeyDoc]) -> str:
    """The reference as aligned text: one key per line, with its type, default and meaning."""
    width = max(len(row.key) for row in rows)
    lines = []
    for row in rows:
        default = f" = {row.default}" if row.default else ""
        lines.append(f"{row.key:<{width}}  {row.type}{default}\n{'':<{width}}  {row.doc}")
    return "\n".join(lines)
