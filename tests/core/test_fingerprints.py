"""A stage's fingerprint covers what its output depends on: the run seed exactly for seeded stages."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.config import config_from_dict
from pipeline.core.runner import PROVIDERS, STEPS
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
