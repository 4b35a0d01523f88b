"""CLI conventions: --version, the generated config reference, and a dry run that writes nothing."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import yaml

import pipeline
from pipeline.core.config import RunConfig, config_from_dict
from pipeline.core.config_reference import config_reference


def curate(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_version_prints_the_package_version() -> None:
    out = curate("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"curate {pipeline.__version__}"


def test_config_reference_names_every_key_with_type_default_and_meaning() -> None:
    rows = {row.key: row for row in config_reference()}
    assert all(row.doc for row in rows.values()), [k for k, r in rows.items() if not r.doc]
    for name in ("input", "run_dir", "steps", "phash_dedup.threshold", "embed.model.pretrained", "dbp.budget.samples_seen"):
        assert name in rows
    # every printed default reads back (as YAML) to the value the config really takes
    defaults = config_from_dict({"input": "/x", "run_dir": "/y"})
    for section in dataclasses.fields(RunConfig):
        value = getattr(defaults, section.name)
        if not dataclasses.is_dataclass(value):
            continue
        for f in dataclasses.fields(value):
            printed = rows[f"{section.name}.{f.name}"].default
            if printed and printed != "(required)":
                got = getattr(value, f.name)
                assert yaml.safe_load(printed) == (list(got) if isinstance(got, tuple) else got), f.name
    text = curate("config").stdout
    assert all(key in text for key in rows)
    assert "phash_dedup.threshold" in text and "int = 4" in text


def test_dry_run_validates_and_writes_nothing(demo_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"input": str(demo_dir / "shards"), "run_dir": str(run_dir)}))
    out = curate("run", str(config), "--dry-run")
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()[:4]] == ["ingest", "basic_filter", "exact_dedup", "export"]
    assert "would run" in out.stdout
    assert not run_dir.exists()
    bad = curate("run", str(config), "--dry-run", "--set", "phash_dedup.threshold=99")
    assert bad.returncode == 2 and "phash_dedup.threshold" in bad.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = curate("run", str(config), "--dry-run", "--set", f"input={empty}")
    assert missing.returncode == 2 and not run_dir.exists()
