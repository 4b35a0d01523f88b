"""Code fingerprints: a hash over every `pipeline` and `schemas` module a module imports, directly or
not (imports inside functions included: they are code the module runs).

Each module is read through its importlib loader, never from a file path: `get_source` where the
loader has the source (a directory, a zip, a wheel or an egg), else its bytecode from `get_code`
(a sourceless build), whose imports are found in the `IMPORT_NAME` instructions. The package is
therefore fingerprinted the same way wherever it was imported from. Modules are located without
being imported (only the packages above them are, as Python does), and every result is computed
once per process.
"""

from __future__ import annotations

import dis
import functools
import hashlib
import importlib.machinery
import importlib.util
import inspect
import marshal
import sys
from ast import Import, ImportFrom, parse, walk
from collections.abc import Iterator
from importlib.machinery import ModuleSpec
from types import CodeType

PACKAGES = ("pipeline", "schemas")  # the product's own top-level packages


def _ours(name: str) -> bool:
    return name.split(".", 1)[0] in PACKAGES


@functools.cache
def _spec(name: str) -> ModuleSpec | None:
    """The spec of module `name`, found without importing it (None if there is no such module)."""
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__spec__", None) is not None:
        return loaded.__spec__
    parent, _, _ = name.rpartition(".")
    if not parent:
        return importlib.util.find_spec(name)
    parent_spec = _spec(parent)
    if parent_spec is None or parent_spec.submodule_search_locations is None:
        return None
    return importlib.machinery.PathFinder.find_spec(name, list(parent_spec.submodule_search_locations))


def _strip_filenames(code: CodeType) -> CodeType:
    """`code` with every co_filename blanked, so its bytes do not depend on where it was loaded from."""
    consts = tuple(_strip_filenames(c) if isinstance(c, CodeType) else c for c in code.co_consts)
    return code.replace(co_filename="", co_consts=consts)


def _bytecode_imports(code: CodeType) -> Iterator[tuple[str, tuple[str, ...], int]]:
    """(name, fromlist, level) of every import statement compiled into `code` and its nested code."""
    consts: list[object] = []
    for ins in dis.get_instructions(code):
        if ins.opname == "LOAD_CONST":
            consts.append(ins.argval)
        elif ins.opname == "IMPORT_NAME" and len(consts) >= 2:
            level, fromlist = consts[-2], consts[-1]
            yield ins.argval, tuple(fromlist or ()), int(level)  # type: ignore[arg-type]
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _bytecode_imports(const)


def _source_imports(source: str) -> Iterator[tuple[str, tuple[str, ...], int]]:
    """(name, fromlist, level) of every import statement in `source`, at any depth."""
    for node in walk(parse(source)):
        if isinstance(node, Import):
            for alias in node.names:
                yield alias.name, (), 0
        elif isinstance(node, ImportFrom):
            yield node.module or "", tuple(alias.name for alias in node.names), node.level


def _package_of(name: str, spec: ModuleSpec) -> str:
    """The package that relative imports in module `name` are resolved against."""
    return name if spec.submodule_search_locations is not None else name.rpartition(".")[0]


def _read(name: str) -> tuple[bytes, list[tuple[str, tuple[str, ...], int]]]:
    """(the bytes that identify module `name`'s code, its import statements)."""
    spec = _spec(name)
    loader = spec.loader if spec is not None else None
    if loader is None:
        return b"", []
    get_source = getattr(loader, "get_source", None)
    source = get_source(name) if get_source is not None else None
    if source is None and get_source is None and not hasattr(loader, "get_code") and name in sys.modules:
        source = inspect.getsource(sys.modules[name])  # a loader of neither (pytest's rewriting hook)
    if source is not None:
        return source.encode(), list(_source_imports(source))
    code = loader.get_code(name) if hasattr(loader, "get_code") else None
    if code is None:
        return b"", []
    return marshal.dumps(_strip_filenames(code)), list(_bytecode_imports(code))


def _imported_modules(name: str, statement: tuple[str, tuple[str, ...], int]) -> set[str]:
    """The product modules an import statement in module `name` runs: the named module, the
    packages above it, and each imported name that is itself a submodule."""
    target, fromlist, level = statement
    if level:
        base = _package_of(name, _spec(name))  # type: ignore[arg-type]
        target = importlib.util.resolve_name("." * level + target, base)
    if not _ours(target):
        return set()
    parts = target.split(".")
    found = {".".join(parts[: i + 1]) for i in range(len(parts))}
    target_spec = _spec(target)
    if target_spec is not None and target_spec.submodule_search_locations is not None:
        found |= {f"{target}.{item}" for item in fromlist if item != "*" and _spec(f"{target}.{item}") is not None}
    return {module for module in found if _spec(module) is not None}


@functools.cache
def _module(name: str) -> tuple[bytes, frozenset[str]]:
    """(module `name`'s code bytes, the product modules it imports directly)."""
    text, statements = _read(name)
    imported: set[str] = set()
    for statement in statements:
        imported |= _imported_modules(name, statement)
    return text, frozenset(imported - {name})


@functools.cache
def module_closure(name: str) -> tuple[str, ...]:
    """Module `name` and every product module it imports, directly or transitively, sorted."""
    seen = {name}
    todo = [name]
    while todo:
        for dep in _module(todo.pop())[1]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return tuple(sorted(seen))


@functools.cache
def code_hash(name: str) -> str:
    """sha256 over the name and code of every module in `module_closure(name)`."""
    h = hashlib.sha256()
    for module in module_closure(name):
        h.update(module.encode() + b"\0" + _module(module)[0] + b"\0")
    return h.hexdigest()
