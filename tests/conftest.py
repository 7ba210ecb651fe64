"""Shared fixtures. The built-in model loads once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers and tests/registry.py

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep trained small models in a per-session cache unless the caller chose one."""
    if "CONVLENS_CACHE_DIR" not in os.environ:
        os.environ["CONVLENS_CACHE_DIR"] = str(tmp_path_factory.mktemp("convlens-cache"))


@pytest.fixture(scope="session")
def lite0():
    import convlens

    return convlens.load_model("efficientnet_lite0")
