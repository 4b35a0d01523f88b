"""Config of the dedup steps: errors name the key; providers are put in only where a step needs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.config import ConfigError, config_from_dict
from pipeline.core.runner import pipeline_stages


def cfg(tmp_path: Path, **extra):
    return config_from_dict({"input": str(tmp_path / "in"), "run_dir": str(tmp_path / "run"), **extra})


def error(tmp_path: Path, **extra) -> str:
    with pytest.raises(ConfigError) as err:
        pipeline_stages(cfg(tmp_path, **extra))
    return str(err.value)


def test_bad_values_name_their_key(tmp_path: Path) -> None:
    assert "'phash_dedup.threshold'" in error(tmp_path, phash_dedup={"threshold": 20})
    assert "'semdedup.eps'" in error(tmp_path, semdedup={"eps": 0})
    assert "'semdedup.keep'" in error(tmp_path, semdedup={"keep": "middle"})
    assert "'semdedup.keep_count'" in error(tmp_path, semdedup={"keep_fraction": 0.5, "keep_count": 3})
    assert "'semdedup.keep_fraction'" in error(tmp_path, semdedup={"keep_fraction": 1.5})
    assert "'decontaminate.methods[0]'" in error(tmp_path, decontaminate={"methods": ["md5"]})
    assert "'decontaminate.methods'" in error(tmp_path, decontaminate={"methods": ["exact", "exact"]})
    assert "'decontaminate.eval_sets[0]'" in error(tmp_path, decontaminate={"eval_sets": [str(tmp_path / "no")]})
    assert "'decontaminate.eval_sets'" in error(tmp_path, steps=["decontaminate"])
    tmp_path.joinpath("eval").mkdir()
    semantic = {"eval_sets": [str(tmp_path / "eval")]}
    assert "'decontaminate.methods'" in error(tmp_path, steps=["decontaminate"], decontaminate=semantic)


def test_providers_go_before_the_first_step_that_needs_them(tmp_path: Path) -> None:
    tmp_path.joinpath("eval").mkdir()
    model = {"arch": "curate-tiny", "allow_random": True}
    names = [s.name for s in pipeline_stages(cfg(
        tmp_path, steps=["exact_dedup", "phash_dedup", "decontaminate", "semdedup"],
        embed={"enabled": True, "model": model}, cluster={"enabled": True},
        decontaminate={"eval_sets": [str(tmp_path / "eval")]}))]
    assert names == ["ingest", "exact_dedup", "phash_dedup", "embed", "decontaminate", "cluster", "semdedup", "export"]
    no_model = [s.name for s in pipeline_stages(cfg(
        tmp_path, steps=["decontaminate"], decontaminate={"eval_sets": [str(tmp_path / "eval")],
                                                          "methods": ["exact", "phash"]}))]
    assert no_model == ["ingest", "decontaminate", "export"]
    # a step's providers come from `steps` alone: semdedup reads assignments, so cluster runs
    assert [s.name for s in pipeline_stages(cfg(tmp_path, steps=["semdedup"], embed={"model": model}))] == \
        ["ingest", "embed", "cluster", "semdedup", "export"]
    assert "'embed.model'" in error(tmp_path, steps=["semdedup"])
