"""The generic typed loader behind the run config: plain YAML data -> frozen dataclasses, checked
against their annotations, with `key=value` overrides. Fields marked as paths (`fields.setting(...,
path=...)`) are made absolute before validation and checked to exist after it, wherever they are.

Every error names the offending key and is raised before Spark starts or anything is written.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.core.fields import path_kind


class ConfigError(ValueError):
    """A configuration problem, always naming the key at fault."""


def check(ok: bool, key: str, message: str) -> None:
    """Raise a ConfigError naming `key` unless `ok`."""
    if not ok:
        raise ConfigError(f"config key '{key}': {message}")


def looks_like_path(value: str) -> bool:
    """A checkpoint reference that is a file path rather than a pretrained tag."""
    return "/" in value or value.endswith((".pt", ".pth", ".bin", ".safetensors"))


def absolute(path: str) -> str:
    """Local relative paths become absolute (relative to the working directory); URLs stay as they are."""
    if "://" in path:
        return path
    return str(Path(path).expanduser().resolve())


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _section(tp: Any) -> type | None:
    """The dataclass a field annotation holds (directly or as `X | None`), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    options = [arg for arg in typing.get_args(tp) if dataclasses.is_dataclass(arg)]
    return options[0] if options else None


def _absolute_value(value: Any, kind: str) -> Any:
    if isinstance(value, str):
        return absolute(value) if kind != "checkpoint" or looks_like_path(value) else value
    if isinstance(value, list | tuple):
        return [_absolute_value(v, kind) for v in value]
    return value


def absolute_paths(cls: type, data: Any) -> Any:
    """A copy of `data` (plain data for `cls`) with every path field's local paths made absolute."""
    if not isinstance(data, dict):
        return data
    hints = typing.get_type_hints(cls)
    out = dict(data)
    for f in dataclasses.fields(cls):
        if f.name not in out:
            continue
        kind, section = path_kind(f), _section(hints[f.name])
        if kind is not None:
            out[f.name] = _absolute_value(out[f.name], kind)
        elif section is not None:
            out[f.name] = absolute_paths(section, out[f.name])
    return out


def _check_exists(value: Any, kind: str, key: str) -> None:
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_exists(item, kind, f"{key}[{i}]")
        return
    if not isinstance(value, str) or "://" in value:
        return
    if kind == "existing" and not any(c in value for c in "*?[{"):  # globs and braces are checked when read
        check(Path(value).exists(), key, f"'{value}' does not exist")
    if kind == "checkpoint" and looks_like_path(value):
        check(Path(value).is_file(), key, f"no checkpoint file at '{value}'")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it converted to the dataclass form."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        check(isinstance(value, dict), key, f"expected a mapping, got {type(value).__name__}")
        return build(tp, value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        check(value in choices, key, f"expected one of {list(choices)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            check(type(None) in options, key, "must not be null")
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is dict:
        kt, vt = typing.get_args(tp)
        check(isinstance(value, dict), key, f"expected a mapping, got {type(value).__name__}")
        return {coerce(k, kt, f"{key}.{k}"): coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if origin in (tuple, list):
        (item_tp, *_) = typing.get_args(tp)
        check(isinstance(value, list | tuple), key, f"expected a list, got {type(value).__name__}")
        items = [coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        check(ok, key, f"expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        check(ok, key, f"expected an integer, got {type(value).__name__} {value!r}")
        return value
    check(isinstance(value, tp), key, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    """Plain data -> a `cls` instance: unknown keys refused, required keys demanded, path fields
    checked, then the instance's own `validate(prefix)`."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        dotted = f"{prefix}.{name}" if prefix else str(name)
        check(name in fields, dotted, f"unknown key (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        dotted = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = coerce(data[name], hints[name], dotted)
            if path_kind(f) is not None:
                _check_exists(kwargs[name], path_kind(f), dotted)
        else:
            no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            check(not no_default, dotted, "is required")
    try:
        obj = cls(**kwargs)
    except ValueError as err:
        raise ConfigError(f"config key '{prefix or '<root>'}': {err}") from None
    if hasattr(obj, "validate"):
        obj.validate(prefix)
    return obj


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        check(isinstance(child, dict), dotted, f"'{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ["a.b=1", "input=x"] into a nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override '{pair}': expected key=value")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override '{pair}': the value is not valid YAML ({str(err).splitlines()[0]}); "
                              "quote it as a string or fix it") from None
        _set_dotted(out, key.strip(), value)
    return out


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra` on top, section by section."""
    merged = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def load(cls: type, data: Any) -> Any:
    """Plain data -> a validated `cls` (local paths made absolute first)."""
    check(isinstance(data, dict), "<root>", "the config must be a mapping")
    return build(cls, absolute_paths(cls, data), "")


def load_yaml(cls: type, path: str | Path, overrides: list[str] | None = None) -> Any:
    """Read a YAML file, apply `key=value` overrides, validate into a `cls`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{path}' is not valid YAML: {err}") from err
    check(isinstance(data, dict), "<root>", "the config must be a mapping")
    return load(cls, merge(data, parse_overrides(overrides or [])))

