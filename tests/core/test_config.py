"""Config loading: types, unknown keys, impossible values and missing paths name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.core.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return p


def test_defaults_and_overrides(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "input: in\nrun_dir: out\n"), ["basic_filter.min_side=64", "export.order=source"])
    assert cfg.basic_filter.min_side == 64
    assert cfg.export.order == "source"
    assert cfg.basic_filter.max_aspect == 3.0
    assert Path(cfg.run_dir).is_absolute() and cfg.run_dir.endswith("/out")


@pytest.mark.parametrize(
    ("text", "overrides", "key"),
    [
        ("input: a\nrun_dir: b\nbogus: 1\n", [], "'bogus'"),
        ("input: a\nrun_dir: b\nbasic_filter: {min_side: big}\n", [], "'basic_filter.min_side'"),
        ("input: a\nrun_dir: b\n", ["basic_filter.max_aspect=0.5"], "'basic_filter.max_aspect'"),
        ("input: a\nrun_dir: b\n", ["export.order=random"], "'export.order'"),
        ("input: a\nrun_dir: b\n", ["basic_filter.min_side=x"], "'basic_filter.min_side'"),
        ("run_dir: b\n", [], "'input'"),
        ("input: a\nrun_dir: b\nexport: 5\n", [], "'export'"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(write(tmp_path, text), overrides)


def test_cli_bad_config_fails_cleanly_and_writes_nothing(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    cfg = write(tmp_path, f"input: {tmp_path}/nowhere\nrun_dir: {run_dir}\nexport: {{samples_per_shard: x}}\n")
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "export.samples_per_shard" in err and err.count("error") == 1
    assert not run_dir.exists()


def test_cli_missing_input_fails_cleanly_and_writes_nothing(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    cfg = write(tmp_path, f"input: {tmp_path}/nowhere\nrun_dir: {run_dir}\n")
    assert main(["run", str(cfg)]) == 2
    assert "matches no .tar shards" in capsys.readouterr().err
    assert not run_dir.exists()
