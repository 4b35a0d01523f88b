"""Runtime dependencies are complete: every third-party module the product imports belongs to a
distribution in `dependencies`, or to a named extra and is imported only where it is used (so a
plain install imports every module; `make wheel-check` runs one)."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("pipeline", "schemas", "jobs")


def requirement_name(spec: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", spec).group(0)).lower()


def imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """(top-level module, imported at module level) for every absolute import."""
    module_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(name.split(".")[0], id(node) in module_level) for name in names]
    return found


def test_every_imported_distribution_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {requirement_name(d) for d in project["dependencies"]}
    extras = {name: {requirement_name(d) for d in deps} for name, deps in project["optional-dependencies"].items()
              if name != "dev"}
    owners = md.packages_distributions()
    problems = []
    for path in sorted(p for top in PRODUCT for p in (ROOT / top).rglob("*.py")):
        for module, at_top in imports(ast.parse(path.read_text())):
            if module in sys.stdlib_module_names or module in ("pipeline", "schemas", "__future__"):
                continue
            dists = {requirement_name(d) for d in owners.get(module, [module])}
            if dists & required:
                continue
            extra = [name for name, deps in extras.items() if dists & deps]
            if not extra:
                problems.append(f"{path.relative_to(ROOT)}: '{module}' ({', '.join(sorted(dists))}) is in no "
                                "dependency or extra")
            elif at_top:
                problems.append(f"{path.relative_to(ROOT)}: '{module}' of extra [{extra[0]}] imported at module level")
    assert not problems, "\n".join(problems)
