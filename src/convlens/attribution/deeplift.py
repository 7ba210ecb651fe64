"""DeepLIFT with the rescale rule, for any elementwise activation module.

Shrikumar, Greenside & Kundaje, "Learning Important Features Through Propagating
Activation Differences", ICML 2017, arXiv:1704.02685. Differences from a reference
``x'`` are propagated backwards with *multipliers* ``m = d(out) / d(in)`` that replace
gradients: linear layers (convolutions, batch norm in eval mode, pooling by averages)
keep their weights; an elementwise nonlinearity ``y = f(u)`` uses the rescale rule

    m = (f(u) - f(u')) / (u - u')          (f'(u) where |u - u'| < eps)

with ``u'`` its input on the reference. The attribution is ``(x - x') * m_{x -> F}`` and
it sums to ``F(x) - F(x')`` (summation-to-delta) when every nonlinearity is an
elementwise module. The rule holds for any elementwise ``f``: ReLU, ReLU6 (so
EfficientNet-Lite0), LeakyReLU, ELU, GELU, SiLU, sigmoid, tanh, hardswish, ...

How: ``x`` and ``x'`` run as one batch ``[x; x']`` under
:func:`convlens.hooks.backward_rules`, so every call of an activation sees its input
on both halves and the rule pairs them row by row (module reuse and in-place
activations are handled by the hooks). Not covered: activations called as functions
(``torch.nn.functional.relu``, no hook sees them) and max pooling, which keeps its
gradient (it routes to the maximum of ``x``), so summation-to-delta is then approximate.
"""

from __future__ import annotations

import torch
from torch import nn

from convlens.attribution.base import register_method
from convlens.attribution.integrated import BaselineLike, _fixed_target, baseline_input
from convlens.hooks import backward_rules, inference_context
from convlens.models.model import Model
from convlens.targets import Target, TargetLike

__all__ = ["ELEMENTWISE_TYPES", "deeplift", "deeplift_with_delta"]

#: activation modules the rescale rule acts on (elementwise functions of one input)
ELEMENTWISE_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.LogSigmoid,
)  # fmt: skip
#: below this input difference the multiplier is the derivative (Captum's threshold)
EPS = 1e-10


def _is_elementwise(_name: str, module: nn.Module) -> bool:
    return isinstance(module, ELEMENTWISE_TYPES)


def has_elementwise_activation(model: Model) -> bool:
    """Whether DeepLIFT's rescale rule has a module to act on (else it is gradient x input)."""
    return not isinstance(model.module, torch.jit.ScriptModule) and any(
        isinstance(m, ELEMENTWISE_TYPES) for m in model.module.modules()
    )


def _rescale(
    module: nn.Module, inp: torch.Tensor, out: torch.Tensor, grad: torch.Tensor
) -> torch.Tensor:
    """The rescale multiplier for rows ``[x; x']``; both halves get the same multiplier."""
    n = inp.shape[0] // 2
    du = inp[:n] - inp[n:]
    dy = out[:n] - out[n:]
    small = du.abs() < EPS
    with torch.enable_grad():  # the local derivative where the secant is undefined
        u = inp[:n].detach().clone().requires_grad_(True)
        # .forward skips the hooks of the running backward_rules block; the clone keeps an
        # in-place module off the leaf
        (slope,) = torch.autograd.grad(module.forward(u.clone()), u, torch.ones_like(u))
    multiplier = torch.where(small, slope, dy / torch.where(small, torch.ones_like(du), du))
    return grad * torch.cat([multiplier, multiplier])


def _multipliers(model: Model, x: torch.Tensor, base: torch.Tensor, target: Target) -> torch.Tensor:
    n = x.shape[0]
    rows = torch.cat([x, base]).requires_grad_(True)
    with (
        torch.enable_grad(),
        inference_context(model.module),
        backward_rules(model.module, _rescale, select=_is_elementwise),
    ):
        # the reference rows take the same class as their image
        both = (
            Target("class", classes=torch.cat([target.classes, target.classes]))
            if target.kind == "class" and target.classes is not None and target.classes.numel() > 1
            else target
        )
        scores = both.scores(model, rows)[0]
        (grad,) = torch.autograd.grad(scores[:n].sum(), rows)
    return grad[:n]


@register_method(
    "deeplift",
    reduce="sum",
    random=True,
    paper="Shrikumar, Greenside & Kundaje 2017, arXiv:1704.02685",
    applies=has_elementwise_activation,
)
def deeplift(
    model: Model,
    x: torch.Tensor,
    target: TargetLike = None,
    *,
    baseline: BaselineLike = "black",
    blur_sigma: float = 10.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DeepLIFT (rescale rule): ``(x - x') * m``, ``m`` the rescaled multipliers (module docstring).

    Shrikumar, Greenside & Kundaje 2017, arXiv:1704.02685. Equal to
    ``captum.attr.DeepLift`` (``multiply_by_inputs=True``) on networks of convolutions,
    linear layers, average pooling and ReLU modules.

    Parameters
    ----------
    baseline
        The reference ``x'``: ``"black"``, ``"blur"`` (``blur_sigma`` pixels), ``"noise"``
        (drawn from ``generator``) or an input-space tensor
        (:func:`~convlens.attribution.integrated.baseline_input`).

    Returns
    -------
    torch.Tensor
        Shaped like ``x``; sums to ``F(x) - F(x')`` per image on networks whose
        nonlinearities are elementwise activation modules.
    """
    return deeplift_with_delta(
        model, x, target, baseline=baseline, blur_sigma=blur_sigma, generator=generator
    )[0]


def deeplift_with_delta(
    model: Model,
    x: torch.Tensor,
    target: TargetLike = None,
    *,
    baseline: BaselineLike = "black",
    blur_sigma: float = 10.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepLIFT and each image's ``F(x) - F(x')`` (the total the attributions should sum to)."""
    x = x.detach()
    base = baseline_input(model, x, baseline, blur_sigma=blur_sigma, generator=generator)
    fixed = _fixed_target(model, x, target)
    attribution = (x - base) * _multipliers(model, x, base, fixed)
    with torch.no_grad(), inference_context(model.module):
        delta = fixed.scores(model, x)[0] - fixed.scores(model, base)[0]
    return attribution, delta.detach()
