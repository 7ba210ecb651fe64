"""Rows for ``convlens.inspect``: the input gradient, loss gradients of every layer, activations.

Peers compute the same thing: Captum's ``Saliency(abs=False)`` is the same input gradient
(the peer-diff column checks it), and Captum's ``LayerActivation`` the same layer output.
The sweep tries Captum with the parameters as loaded (``requires_grad=True``) and frozen, as
a user could freeze them before calling it; the fastest setting is reported.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from harness import BenchRow, Context, PeerSetting, SetupFn

from convlens.hooks import frozen
from convlens.inspect.activations import layer_activations
from convlens.inspect.gradients import input_gradient, loss_layer_gradients

__all__ = ["ACTIVATION_LAYER", "ROWS"]

#: A middle block of EfficientNet-Lite0 (its output is (N, 80, 14, 14)).
ACTIVATION_LAYER = "blocks.5"


def _input_gradient(ctx: Context) -> Callable[[], torch.Tensor]:
    model, x, classes = ctx.model, ctx.x, ctx.classes
    return lambda: input_gradient(model, x, classes)


def _loss_layer_gradients(ctx: Context) -> Callable[[], object]:
    model, x, classes = ctx.model, ctx.x, ctx.classes
    model.layers()  # the layer table is built once per model: not part of the timed call
    return lambda: loss_layer_gradients(model, x, classes)


def _layer_activations(ctx: Context) -> Callable[[], torch.Tensor]:
    model, x = ctx.model, ctx.x
    return lambda: layer_activations(model, x, ACTIVATION_LAYER)


def _captum_saliency(freeze: bool) -> SetupFn:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        from captum.attr import Saliency

        module = ctx.model.module
        saliency = Saliency(module)
        # requires_grad set beforehand, as Captum's docs do (else it warns on every call)
        x = ctx.x.detach().clone().requires_grad_()
        target = ctx.classes

        def run() -> torch.Tensor:
            if freeze:
                with frozen(module):
                    return saliency.attribute(x, target=target, abs=False)
            return saliency.attribute(x, target=target, abs=False)

        return run

    return setup


def _captum_layer_activation(ctx: Context) -> Callable[[], torch.Tensor]:
    from captum.attr import LayerActivation

    module = ctx.model.module
    layer_act = LayerActivation(module, module.get_submodule(ACTIVATION_LAYER))
    x = ctx.x
    return lambda: layer_act.attribute(x)


ROWS = [
    BenchRow(
        "input_gradient",
        "inspect",
        _input_gradient,
        peers=[
            PeerSetting(
                "captum",
                {"method": "Saliency", "abs": False, "params": "as loaded"},
                _captum_saliency(False),
            ),
            PeerSetting(
                "captum",
                {"method": "Saliency", "abs": False, "params": "frozen"},
                _captum_saliency(True),
            ),
        ],
        settings={"target": "class tensor"},
    ),
    BenchRow(
        "loss_layer_gradients",
        "inspect",
        _loss_layer_gradients,
        settings={"layers": "all leaf layers", "loss": "cross-entropy"},
    ),
    BenchRow(
        "layer_activations",
        "inspect",
        _layer_activations,
        peers=[PeerSetting("captum", {"method": "LayerActivation"}, _captum_layer_activation)],
        settings={"layer": ACTIVATION_LAYER},
    ),
]
