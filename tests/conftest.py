"""Shared fixtures: one local Spark session and one demo dataset for the whole test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.config import SparkConfig
from pipeline.core.spark import get_spark


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
