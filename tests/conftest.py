"""Shared fixtures. The built-in model loads once per session."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from convlens.models.training import torch_threads

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers and tests/registry.py

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep trained small models in a per-session cache unless the caller chose one."""
    if "CONVLENS_CACHE_DIR" not in os.environ:
        os.environ["CONVLENS_CACHE_DIR"] = str(tmp_path_factory.mktemp("convlens-cache"))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run a test on one torch thread and restore the count after.

    Small models run fastest on one thread, and two test processes on two cores with more
    threads each spin against each other (OpenMP). A folder or file whose tests all want it
    adds an autouse fixture that requests this one; code under test must not leave the count
    changed (tests/test_global_state.py).
    """
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def one_thread_per_module() -> Iterator[None]:
    """:func:`one_thread` for a whole module (its module-scoped fixtures run on one thread too)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def lite0():
    import convlens

    return convlens.load_model("efficientnet_lite0")
