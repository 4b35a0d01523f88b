"""The pruning and filtering config sections: errors name the key, before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.config import ConfigError, config_from_dict
from pipeline.core.runner import pipeline_stages


def cfg(tmp_path: Path, **extra):
    return config_from_dict({"input": str(tmp_path), "run_dir": str(tmp_path / "run"), **extra})


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"steps": ["dbp"]}, "dbp.keep_fraction"),
        ({"dbp": {"keep_fraction": 1.5}}, "dbp.keep_fraction"),
        ({"dbp": {"keep_fraction": 0.3, "keep_count": 10}}, "dbp.keep_count"),
        ({"dbp": {"tau": 0}}, "dbp.tau"),
        ({"ssp": {"scope": "local"}}, "ssp.scope"),
        ({"random": {"keep_fraction": 0.2, "budget": {"samples_seen": 0, "max_repeats": 2}}},
         "random.budget.samples_seen"),
        ({"random": {"budget": {"samples_seen": 10}}}, "random.budget.max_repeats"),
        ({"steps": ["dfn"]}, "dfn.threshold"),
        ({"dfn": {"threshold": 0.2, "top_fraction": 0.3}}, "dfn.threshold"),
        ({"dfn": {"threshold": 0.2, "keep_count": 30}}, "dfn.threshold"),
        ({"dfn": {"top_fraction": 0.2, "keep_count": 30}}, "dfn.keep_count"),
        ({"dfn": {"keep_count": -1}}, "dfn.keep_count"),
        ({"dfn": {"threshold": 0.2, "budget": {"samples_seen": 5, "max_repeats": 1}}}, "dfn.budget"),
        ({"dfn": {"model": {"arch": "curate-tiny", "pretrained": "/no/such.pt"}}}, "dfn.model.pretrained"),
        ({"steps": ["image_based"]}, "image_based.target"),
        ({"basic_filter": {"languages": ["English"]}}, "basic_filter.languages"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, extra: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        cfg(tmp_path, **extra)


def test_steps_get_their_providers_in_order(tmp_path: Path) -> None:
    on = {"embed": {"enabled": True, "precomputed": None, "model": {"arch": "curate-tiny", "allow_random": True}},
          "cluster": {"enabled": True}}
    names = [s.name for s in pipeline_stages(cfg(tmp_path, steps=["basic_filter", "dfn", "dbp"],
                                                   dfn={"top_fraction": 0.5}, dbp={"keep_fraction": 0.5}, **on))]
    assert names == ["ingest", "basic_filter", "embed", "dfn", "cluster", "dbp", "export"]
    with_model = cfg(tmp_path, steps=["dfn", "random"], dfn={"top_fraction": 0.5, "model": on["embed"]["model"]},
                     random={"keep_count": 10})
    assert [s.name for s in pipeline_stages(with_model)] == ["ingest", "dfn", "random", "export"]
    balanced = cfg(tmp_path, steps=["random"], random={"keep_count": 10, "balance": "cluster"},
                   embed={"model": on["embed"]["model"]})
    assert [s.name for s in pipeline_stages(balanced)] == ["ingest", "embed", "cluster", "random", "export"]
