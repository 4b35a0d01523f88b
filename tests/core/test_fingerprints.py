"""A stage's fingerprint covers what its output depends on: the run seed exactly for seeded stages."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.core.config import config_from_dict
from pipeline.core.runner import PROVIDERS, STEPS
from pipeline.core.stage import RunContext
from pipeline.stages.export import Export
from pipeline.stages.ingest import Ingest

# stages whose output changes with the run seed (random order, sampling or shuffling)
SEEDED = {"cluster", "semdedup", "random", "export"}


def test_the_seed_is_in_the_config_of_exactly_the_seeded_stages(tmp_path: Path) -> None:
    base = {"input": str(tmp_path), "run_dir": str(tmp_path / "run")}
    cfgs = [config_from_dict({**base, "seed": seed}) for seed in (0, 1)]
    stages = [Ingest(), Export(), *(cls() for cls in PROVIDERS.values()), *(cls() for cls in STEPS.values())]
    changed = {s.name for s in stages if s.config_json(cfgs[0]) != s.config_json(cfgs[1])}
    assert changed == SEEDED
    assert all(s.seeded == (s.name in SEEDED) for s in stages)


def test_external_files_count_by_path_size_and_mtime(spark, tmp_path: Path) -> None:
    """A touched, rewritten or swapped checkpoint, eval set or target set reruns the stage reading it."""
    weights, eval_tar, target = tmp_path / "w.pt", tmp_path / "eval" / "00000.tar", tmp_path / "target.npy"
    eval_tar.parent.mkdir()
    for path in (weights, eval_tar, target):
        path.write_bytes(b"x" * 10)
    cfg = config_from_dict({
        "input": str(tmp_path), "run_dir": str(tmp_path / "run"),
        "steps": ["decontaminate", "dfn", "image_based"],
        "embed": {"enabled": True, "model": {"arch": "curate-tiny", "pretrained": str(weights)}},
        "cluster": {"enabled": True},
        "decontaminate": {"eval_sets": [str(eval_tar.parent)], "methods": ["exact"]},
        "dfn": {"model": {"arch": "curate-tiny", "pretrained": str(weights)}, "threshold": 0.1},
        "image_based": {"target": str(target)},
    })
    ctx = RunContext(cfg=cfg, spark=spark)
    stages = {cls.name: cls() for cls in (*PROVIDERS.values(), *STEPS.values())}
    readers = {weights: {"embed", "dfn"}, eval_tar: {"decontaminate"}, target: {"image_based"}}
    for path, names in readers.items():
        for change in (lambda p: os.utime(p, (1, 1)), lambda p: p.write_bytes(b"y" * 11)):
            before = {name: stage.input_fingerprint(ctx) for name, stage in stages.items()}
            change(path)
            after = {name: stage.input_fingerprint(ctx) for name, stage in stages.items()}
            assert {name for name in stages if before[name] != after[name]} == names
