"""A stage's code version covers every product module it runs, read through the import system: the
edit of a helper module reruns exactly the stages that import it, and the package imported from a
zip gives the same code versions as from its folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import pipeline
from pipeline.core.code_version import module_closure
from pipeline.core.runner import PROVIDERS, STEPS
from pipeline.stages.export import Export
from pipeline.stages.ingest import Ingest

ROOT = Path(pipeline.__file__).resolve().parent.parent
PACKAGES = ("pipeline", "schemas")

# prints where the product was imported from and, per stage a run can have, its code version and
# the modules it covers
PRINT_VERSIONS = """
import json
import pipeline
from pipeline.core.code_version import module_closure
from pipeline.core.runner import PROVIDERS, STEPS
from pipeline.stages.export import Export
from pipeline.stages.ingest import Ingest
stages = [Ingest(), Export(), *(c() for c in PROVIDERS.values()), *(c() for c in STEPS.values())]
print(json.dumps({"file": pipeline.__file__, "versions": {s.name: s.code_version() for s in stages},
                  "modules": {s.name: module_closure(type(s).__module__) for s in stages}}))
"""


def _report(path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(path), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", PRINT_VERSIONS], env=env, capture_output=True, text=True,
                          cwd=path.parent, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["file"].startswith(str(path)), report["file"]
    return report


def code_versions(path: Path) -> dict[str, str]:
    """The code version of every stage, computed in a fresh interpreter importing the product from `path`."""
    return _report(path)["versions"]


def _zip(root: Path, archive: Path, pattern: str) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(root.rglob(pattern)):
            zf.write(path, path.relative_to(root).as_posix())
    return archive


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("copy") / "src"
    for name in PACKAGES:
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.fixture(scope="module")
def original(package_copy: Path) -> dict[str, str]:
    return code_versions(package_copy)


def _edited(package_copy: Path, module: str) -> dict[str, str]:
    path = package_copy / module
    text = path.read_text()
    try:
        path.write_text(text + "\n# edited\n")
        return code_versions(package_copy)
    finally:
        path.write_text(text)


def _changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    assert before.keys() == after.keys()
    return {name for name in before if before[name] != after[name]}


def test_editing_semdedup_reruns_the_stages_that_import_it(package_copy: Path, original: dict[str, str]) -> None:
    changed = _changed(original, _edited(package_copy, "pipeline/dedup/semdedup.py"))
    assert "semdedup" in changed
    assert {"ingest", "exact_dedup", "embed", "cluster", "basic_filter"}.isdisjoint(changed)
    modules = {cls.name: cls.__module__ for cls in (Ingest, Export, *PROVIDERS.values(), *STEPS.values())}
    assert changed == {name for name, module in modules.items() if "pipeline.dedup.semdedup" in module_closure(module)}


def test_editing_allocate_reruns_dbp_not_ingest(package_copy: Path, original: dict[str, str]) -> None:
    changed = _changed(original, _edited(package_copy, "pipeline/prune/allocate.py"))
    assert "dbp" in changed
    assert {"ingest", "exact_dedup"}.isdisjoint(changed)


def test_editing_a_schema_reruns_every_stage(package_copy: Path, original: dict[str, str]) -> None:
    assert _changed(original, _edited(package_copy, "schemas/tables.py")) == set(original)


def test_a_zip_import_gives_the_same_code_versions(package_copy: Path, original: dict[str, str],
                                                   tmp_path: Path) -> None:
    assert code_versions(_zip(package_copy, tmp_path / "curate.zip", "*.py")) == original


def test_sourceless_bytecode_covers_the_same_modules(package_copy: Path, tmp_path: Path) -> None:
    compiled = tmp_path / "compiled"
    shutil.copytree(package_copy, compiled)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-b", str(compiled)], check=True)
    for source in compiled.rglob("*.py"):
        source.unlink()
    sourceless = _report(_zip(compiled, tmp_path / "curate-pyc.zip", "*.pyc"))
    assert sourceless["modules"] == _report(package_copy)["modules"]


def test_function_level_imports_count() -> None:
    # image_based imports the model package only inside its Spark task body
    assert "pipeline.models.encode" in module_closure("pipeline.stages.image_based")

