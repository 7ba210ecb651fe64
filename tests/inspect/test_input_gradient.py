"""convlens.inspect.gradients.input_gradient: the one input gradient, against central finite
differences, and the gradient attributions that read it."""

from __future__ import annotations

import copy

import torch

import convlens
from convlens.attribution.gradient import gradient_x_input, layer_gradient, saliency
from convlens.inspect.gradients import input_gradient
from convlens.targets import Neuron

from helpers.tiny import tiny_model


def _double(model: convlens.Model) -> convlens.Model:
    return convlens.Model(
        copy.deepcopy(model.module).double(), model.preprocessing, labels=model.labels
    )


#: 24 input coordinates spread over the image, plus the 3 x 3 x 3 pixels around (y, x) = (3, 4)
#: where the neuron below reads (all 768 would be slow)
_COORDS = torch.cat(
    [
        torch.randperm(3 * 16 * 16, generator=torch.Generator().manual_seed(9))[:24],
        torch.tensor(
            [c * 256 + y * 16 + x for c in range(3) for y in (2, 3, 4) for x in (3, 4, 5)]
        ),
    ]
)


def _finite_difference(f, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Central differences of ``f`` at the coordinates :data:`_COORDS` of ``x``."""
    out = torch.zeros(len(_COORDS), dtype=x.dtype)
    with torch.no_grad():
        for k, i in enumerate(_COORDS.tolist()):
            e = torch.zeros_like(x).view(-1)
            e[i] = h
            out[k] = (f(x + e.view_as(x)) - f(x - e.view_as(x))) / (2 * h)
    return out


def test_class_and_neuron_gradients_match_finite_differences() -> None:
    model = _double(tiny_model("conv", seed=3))
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the caller's no_grad does not stop the gradient
        grad = input_gradient(model, x, 2)

    def logit(v: torch.Tensor) -> float:
        return float(model.module(v)[0, 2])

    torch.testing.assert_close(
        grad.view(-1)[_COORDS], _finite_difference(logit, x), atol=1e-6, rtol=1e-5
    )
    layer = next(r.name for r in model.layers() if r.output_shape and len(r.output_shape) == 3)
    neuron = Neuron(layer, 1, 3, 4)

    def unit(v: torch.Tensor) -> float:
        out: dict[str, torch.Tensor] = {}
        handle = dict(model.module.named_modules())[layer].register_forward_hook(
            lambda m, i, o: out.__setitem__("a", o)
        )
        try:
            model.module(v)
        finally:
            handle.remove()
        return float(out["a"][0, 1, 3, 4])

    ref = _finite_difference(unit, x)
    assert ref.abs().max() > 1e-3  # the neuron does depend on pixels among these
    torch.testing.assert_close(
        input_gradient(model, x, neuron).view(-1)[_COORDS], ref, atol=1e-6, rtol=1e-5
    )
    assert x.grad is None


def test_gradient_attributions_read_this_gradient() -> None:
    model = tiny_model("conv", seed=4)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    grad = input_gradient(model, x, [1, 3])
    assert torch.equal(saliency(model, x, [1, 3]), grad)
    assert torch.equal(layer_gradient(model, x, [1, 3]), grad)
    assert torch.equal(gradient_x_input(model, x, [1, 3]), grad * x)
