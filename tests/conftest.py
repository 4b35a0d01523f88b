"""Shared fixtures: one local Spark session and one demo dataset for the whole test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.core.config import SparkConfig
from pipeline.core.spark import get_spark

# img2dataset imports albumentations, which otherwise asks PyPI for updates: tests stay offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@pytest.fixture(scope="session")
def spark():
    session = get_spark(SparkConfig(master="local[2]", log_level="ERROR"))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """Demo pool + eval set + ground truth, generated once (seed 0)."""
    from pipeline.demo.generate import make_demo_data

    out = tmp_path_factory.mktemp("demo")
    make_demo_data(out, n_samples=400, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The tiny open_clip model's deterministic checkpoint (seed 0), loaded as production weights are."""
    from pipeline.models import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", seed=0)
