"""Guided backpropagation and deconvnet with the ReLU-family rules of DESIGN.md.

For an activation ``y = f(x)`` of the ReLU family, with incoming gradient ``g = dS/dy``:

- forward mask ``m(x)`` = the activation's own derivative: ReLU ``x > 0``; ReLU6
  ``0 < x < 6``; LeakyReLU ``1`` or its slope; Hardtanh ``min < x < max``;
- guided backprop: ``dS/dx := m(x) * relu(g)`` (Springenberg et al. 2015);
- deconvnet: ``dS/dx := relu(g)``, ignoring the mask (Zeiler & Fergus 2014).

Rules act through :func:`convlens.hooks.backward_rules`, so ReLU6 models (where Captum
silently returns the plain gradient) are handled natively and the model is never modified.
"""

from __future__ import annotations

import torch
from torch import nn

from convlens.attribution.base import register_method
from convlens.errors import BadInputError
from convlens.hooks import ACTIVATION_TYPES, backward_rules
from convlens.inspect.gradients import input_gradient
from convlens.models.model import Model
from convlens.targets import TargetLike

__all__ = [
    "activation_derivative",
    "deconvnet",
    "guided_backprop",
    "has_relu_family",
    "require_relu_family",
]


def has_relu_family(model: Model) -> bool:
    """Whether the model has ReLU-family activation *modules*, where the guided and
    deconvnet rules act (the methods' ``applies`` test)."""
    module = model.module
    return not isinstance(module, torch.jit.ScriptModule) and any(
        isinstance(m, ACTIVATION_TYPES) for m in module.modules()
    )


def require_relu_family(chosen: list[str], model: Model, method: str) -> None:
    """Refuse a model where the rules found no activation module to act on: the result
    would be the plain gradient under another name (Captum's silent fallback)."""
    if not chosen:
        raise BadInputError(
            f"{method} changes the backward pass at ReLU-family activation modules (nn.ReLU, ReLU6, LeakyReLU, Hardtanh), and {model.name} has none (GELU/SiLU, or activations called as torch.nn.functional.relu, which no hook sees): the result would be the plain gradient; use saliency, or make the activations modules"
        )


def activation_derivative(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The derivative of a ReLU-family activation at ``x`` (the forward mask)."""
    if isinstance(module, nn.ReLU6):
        return ((x > 0) & (x < 6)).to(x.dtype)
    if isinstance(module, nn.Hardtanh):
        return ((x > module.min_val) & (x < module.max_val)).to(x.dtype)
    if isinstance(module, nn.LeakyReLU):
        return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, module.negative_slope))
    return (x > 0).to(x.dtype)


def _guided_rule(
    module: nn.Module, inp: torch.Tensor, out: torch.Tensor, grad: torch.Tensor
) -> torch.Tensor:
    return activation_derivative(module, inp) * grad.clamp(min=0)


def _positive_part(
    module: nn.Module, inp: torch.Tensor | None, out: torch.Tensor | None, grad: torch.Tensor
) -> torch.Tensor:
    # applied to the gradient at the activation's output; its own backward then multiplies by
    # the mask m(x), which gives the guided rule m(x) * relu(g) without saving anything
    return grad.clamp(min=0)


def _deconv_rule(
    module: nn.Module, inp: torch.Tensor, out: torch.Tensor, grad: torch.Tensor
) -> torch.Tensor:
    return grad.clamp(min=0)


@register_method(
    "guided_backprop",
    reduce="abs_sum",
    paper="Springenberg et al. 2015, arXiv:1412.6806",
    applies=has_relu_family,
)
def guided_backprop(model: Model, x: torch.Tensor, target: TargetLike = None) -> torch.Tensor:
    """Guided backpropagation: ``m(x) * relu(g)`` at every ReLU-family activation.

    Springenberg, Dosovitskiy, Brox & Riedmiller, "Striving for Simplicity: The All
    Convolutional Net", 2015, arXiv:1412.6806.
    """
    with backward_rules(model.module, _positive_part, at="output") as chosen:
        require_relu_family(chosen, model, "guided_backprop")
        return input_gradient(model, x, target)


@register_method(
    "deconvnet",
    reduce="abs_sum",
    paper="Zeiler & Fergus 2014, arXiv:1311.2901",
    applies=has_relu_family,
)
def deconvnet(model: Model, x: torch.Tensor, target: TargetLike = None) -> torch.Tensor:
    """Deconvnet: ``relu(g)`` at every ReLU-family activation (the mask is ignored).

    Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", 2014,
    arXiv:1311.2901.
    """
    with backward_rules(model.module, _deconv_rule) as chosen:
        require_relu_family(chosen, model, "deconvnet")
        return input_gradient(model, x, target)
