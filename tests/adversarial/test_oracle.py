"""The one oracle (black-box attacks and model inversion): counting, the budget, outputs
against the model's own logits, white-box gradients against autograd on the module."""

from __future__ import annotations

import pytest
import torch

from convlens.adversarial import Oracle, QueryBudgetExceeded, pixel_forward
from convlens.errors import BadInputError, ConvlensError, QueryBudgetError
from convlens.models.zoo import load_model
from convlens.privacy import ModelOracle


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return load_model("digits_cnn")


def _pixels(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _logits(model, x: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return model.module.eval()(model.normalize(x))


def test_one_budget_error_in_the_error_tree() -> None:
    assert QueryBudgetExceeded is QueryBudgetError
    assert issubclass(QueryBudgetError, ConvlensError) and issubclass(
        QueryBudgetError, RuntimeError
    )


def test_every_image_is_counted_and_the_budget_is_exact(model) -> None:  # type: ignore[no-untyped-def]
    oracle = Oracle.from_model(model, max_queries=10)
    oracle(_pixels(3))
    oracle.probabilities(_pixels(4))
    assert oracle.queries == 7 and oracle.remaining == 3
    oracle(_pixels(3))  # exactly at the budget: allowed
    assert oracle.queries == 10 and oracle.remaining == 0
    with pytest.raises(QueryBudgetError, match="budget of 10"):
        oracle(_pixels(1))
    assert oracle.queries == 10  # a refused query is not counted
    unlimited = Oracle(pixel_forward(model))
    unlimited(_pixels(5))
    assert unlimited.remaining is None and unlimited.queries == 5


def test_outputs_are_the_models_softmax_and_argmax(model) -> None:  # type: ignore[no-untyped-def]
    x = _pixels(6, seed=1)
    logits = _logits(model, x)
    for oracle in (Oracle.from_model(model), Oracle(pixel_forward(model))):
        torch.testing.assert_close(oracle(x), logits.softmax(dim=1), atol=1e-6, rtol=0)
        torch.testing.assert_close(
            oracle.probabilities(x), logits.softmax(dim=1), atol=1e-6, rtol=0
        )
    labels = Oracle.from_model(model, output="labels")(x)
    assert torch.equal(labels, logits.argmax(dim=1))


def test_white_box_gradient_is_autograd_of_log_p_on_the_module(model) -> None:  # type: ignore[no-untyped-def]
    x = _pixels(2, seed=2)
    classes = torch.tensor([3, 7])
    oracle = Oracle.from_model(model, white_box=True)
    log_p, grad = oracle.gradient(x, classes)
    xr = x.clone().requires_grad_(True)
    ref = torch.log_softmax(model.module.eval()(model.normalize(xr)), dim=1)[[0, 1], classes]
    (ref_grad,) = torch.autograd.grad(ref.sum(), xr)
    torch.testing.assert_close(log_p, ref.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=1e-5)
    assert oracle.queries == 2 and oracle.white_box
    black = Oracle.from_model(model)
    with pytest.raises(BadInputError, match="no gradients"):
        black.gradient(x, classes)
    assert black.queries == 0


def test_shapes_and_settings_are_checked(model) -> None:  # type: ignore[no-untyped-def]
    oracle = Oracle.from_model(model)
    assert oracle.input_shape == (1, 8, 8) and oracle.n_classes == 10 and oracle.queries == 0
    with pytest.raises(BadInputError, match=r"\(N, 1, 8, 8\)"):
        oracle(torch.zeros(1, 1, 9, 9))
    with pytest.raises(BadInputError, match="pixel batch"):
        Oracle(pixel_forward(model))(torch.zeros(1, 8, 8))
    with pytest.raises(BadInputError, match="output"):
        Oracle(pixel_forward(model), output="logits")
    with pytest.raises(BadInputError, match="max_queries"):
        Oracle(pixel_forward(model), max_queries=0)


def test_model_inversion_gets_the_same_oracle(model) -> None:  # type: ignore[no-untyped-def]
    oracle = ModelOracle(model, white_box=False, budget=4)
    assert type(oracle) is Oracle and oracle.max_queries == 4 and not oracle.white_box
