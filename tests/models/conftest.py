"""Fixtures of the model tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from pipeline.models import set_torch_threads


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny forwards are fastest single-threaded; extra OpenMP threads thrash on a busy 2-core box."""
    before = torch.get_num_threads()
    set_torch_threads(1)
    yield
    torch.set_num_threads(before)
