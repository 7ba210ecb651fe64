"""Shared set-up of the attack tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one torch thread (the ``one_thread`` fixture in tests/conftest.py)."""


@pytest.fixture(scope="session")
def digits() -> tuple[object, torch.Tensor, torch.Tensor]:
    """The digits model and 40 test digits it classifies correctly."""
    import convlens
    from convlens.models.small import load_dataset

    model = convlens.load_model("digits_cnn")
    x, y = load_dataset("digits", "test")
    with torch.no_grad():
        ok = model.module(model.normalize(x)).argmax(dim=1) == y
    return model, x[ok][:40], y[ok][:40]
