"""Model inversion: the oracle hides the model and data, budgets hold, reconstructions improve
the class score."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from convlens.errors import BadInputError
from convlens.models.model import Model
from convlens.models.zoo import load_model
from convlens.privacy.inversion import (
    ModelOracle,
    QueryBudgetError,
    invert_black_box,
    invert_white_box,
    total_variation,
)


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    return load_model("digits_cnn")


def _blank_log_p(digits, init: float = 0.1) -> torch.Tensor:  # type: ignore[no-untyped-def]
    oracle = ModelOracle(digits, white_box=False)
    p = oracle.probabilities(torch.full((10, 1, 8, 8), init))
    return torch.log(p[torch.arange(10), torch.arange(10)])


def test_black_box_oracle_exposes_outputs_only(digits) -> None:  # type: ignore[no-untyped-def]
    oracle = ModelOracle(digits, white_box=False)
    with pytest.raises(BadInputError, match="no gradients"):
        oracle.gradient(torch.zeros(1, 1, 8, 8), torch.tensor([3]))
    assert not hasattr(oracle, "__dict__")  # __slots__: nothing can be hung on it
    for name in dir(oracle):
        value = getattr(oracle, name)
        assert not isinstance(value, (nn.Module, nn.Parameter)), name
        assert not (isinstance(value, torch.Tensor) and value.numel() > 1), (
            name
        )  # no data, no weights
    p = oracle.probabilities(torch.rand(3, 1, 8, 8))
    assert p.shape == (3, 10) and not p.requires_grad
    assert p.sum(1) == pytest.approx(torch.ones(3), abs=1e-5)
    assert oracle.queries == 3


def test_white_box_gradient_matches_finite_differences(digits) -> None:  # type: ignore[no-untyped-def]
    # a float64 copy, so central differences are accurate (ReLU kinks are rarely crossed at h=1e-5)
    oracle = ModelOracle(
        Model(copy.deepcopy(digits.module).double(), digits.preprocessing), white_box=True
    )
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    log_p, grad = oracle.gradient(x, torch.tensor([4]))
    h = 1e-5
    for i, j in [(2, 3), (4, 4), (6, 1)]:
        e = torch.zeros_like(x)
        e[0, 0, i, j] = h
        plus = torch.log(oracle.probabilities(x + e)[0, 4])
        minus = torch.log(oracle.probabilities(x - e)[0, 4])
        assert float(grad[0, 0, i, j]) == pytest.approx(
            float(plus - minus) / (2 * h), rel=1e-4, abs=1e-6
        )
    assert float(log_p[0]) == pytest.approx(
        float(torch.log(oracle.probabilities(x)[0, 4])), abs=1e-5
    )


def test_budget_is_enforced_and_counted(digits) -> None:  # type: ignore[no-untyped-def]
    oracle = ModelOracle(digits, white_box=False, budget=100)
    out = invert_black_box(oracle, classes=[2], budget_per_class=100, samples=5, seed=0)
    assert out["queries"] == oracle.queries <= 100
    assert oracle.queries == 9 * 10 + 1  # 9 steps of 10 probes, one final check
    with pytest.raises(QueryBudgetError):
        oracle.probabilities(torch.zeros(10, 1, 8, 8))


def test_total_variation_by_hand() -> None:
    x = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])
    # vertical differences |1-0|, |1-1| -> mean 0.5; horizontal |1-0|, |1-1| -> mean 0.5
    assert total_variation(x) == pytest.approx(torch.tensor([1.0]))


def test_white_box_reconstructions_raise_every_class_score(digits) -> None:  # type: ignore[no-untyped-def]
    out = invert_white_box(ModelOracle(digits, white_box=True), steps=100, seed=0)
    after = torch.log(out["probabilities"][torch.arange(10), torch.arange(10)])
    assert (after > _blank_log_p(digits)).all() and (after > math.log(0.5)).all()
    assert (out["probabilities"].argmax(1) == torch.arange(10)).sum() >= 9
    assert out["images"].min() >= 0 and out["images"].max() <= 1


def test_black_box_reconstructions_raise_class_scores(digits) -> None:  # type: ignore[no-untyped-def]
    oracle = ModelOracle(digits, white_box=False)
    out = invert_black_box(oracle, classes=[0, 3, 7], budget_per_class=1001, seed=0)
    after = torch.log(out["probabilities"][torch.arange(3), torch.tensor([0, 3, 7])])
    assert (after > _blank_log_p(digits)[[0, 3, 7]]).all()
    assert out["queries"] == 3 * ((1000 // 40) * 40 + 1)
