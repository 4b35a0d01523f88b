"""The import structure runs one way: core <- algorithms <- stages <- runner, CLI and report. Only
the runner and the CLI import stage modules, and no import hides inside a function to dodge a
cycle (checked over the source with `ast`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pipeline

ROOT = Path(pipeline.__file__).resolve().parent.parent

CORE, ALGORITHMS, STAGES, TOP = range(4)
LAYERS = {  # the longest matching prefix decides
    "schemas": CORE, "pipeline": CORE, "pipeline.core": CORE, "pipeline.imaging": CORE,
    "pipeline.cluster": ALGORITHMS, "pipeline.dedup": ALGORITHMS, "pipeline.prune": ALGORITHMS,
    "pipeline.models": ALGORITHMS, "pipeline.embedding": ALGORITHMS, "pipeline.export": ALGORITHMS,
    "pipeline.language": ALGORITHMS,
    "pipeline.stages": STAGES,
    "pipeline.core.runner": TOP, "pipeline.cli": TOP, "pipeline.report": TOP, "pipeline.containment": TOP,
    "pipeline.explain": TOP, "pipeline.verify": TOP, "pipeline.demo": TOP,
}
STAGE_IMPORTERS = {"pipeline.core.runner", "pipeline.cli"}
# Imports inside a function, allowed for a stated reason (never to dodge a cycle):
LAZY = {
    "pipeline.models": "torch and open_clip load only in the tasks and stages that encode",
}
LAZY_IMPORTERS = {
    "pipeline.cli": "a command imports only its own code, so `curate --version` starts at once",
}


def layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def modules() -> dict[str, Path]:
    found = {}
    for top in ("pipeline", "schemas"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    else:
        base = module if is_package else module.rpartition(".")[0]
        if node.level:
            base = ".".join(base.split(".")[: len(base.split(".")) - node.level + 1])
            target = f"{base}.{node.module}" if node.module else base
        else:
            target = node.module or ""
        names = {target} | {f"{target}.{alias.name}" for alias in node.names}
    return {name for name in names if name in known}


def imports() -> list[tuple[str, str, bool]]:
    """(importer, imported product module, inside a function) for every import statement."""
    found = modules()
    known = set(found)
    edges = []
    for module, path in found.items():
        tree = ast.parse(path.read_text())
        is_package = path.name == "__init__.py"

        def visit(node: ast.AST, in_function: bool, module: str = module, is_package: bool = is_package) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                    continue  # annotations only: never executed
                if isinstance(child, ast.Import | ast.ImportFrom):
                    edges.extend((module, t, in_function) for t in _targets(module, is_package, child, known))
                visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

        visit(tree, False)
    return edges


def test_every_module_has_a_layer() -> None:
    for module in modules():
        layer(module)


def test_only_the_runner_and_the_cli_import_stage_modules() -> None:
    bad = sorted({(a, b) for a, b, _ in imports() if b.startswith("pipeline.stages.") and a not in STAGE_IMPORTERS})
    assert bad == []


def test_imports_run_one_way() -> None:
    bad = sorted({(a, b) for a, b, _ in imports() if layer(b) > layer(a)})
    assert bad == []


def test_no_function_level_import_dodges_a_cycle() -> None:
    lazy = sorted({(a, b) for a, b, inside in imports() if inside and a not in LAZY_IMPORTERS
                   and not any(b == m or b.startswith(f"{m}.") for m in LAZY)})
    assert lazy == []


def test_the_import_graph_has_no_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for a, b, inside in imports():
        if not inside and a != b and not b.startswith(f"{a}."):
            graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}

    def cycle_from(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*path, node, dep]
            if dep not in state and (found := cycle_from(dep, [*path, node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            assert cycle_from(node, []) is None
