"""Rows for the gradient family: saliency, gradient x input, guided backprop, deconvnet.

Floor: the gradient floor (one forward + one backward to the input). Targets (issue 4):
saliency family <= 1.1x, guided backprop / deconvnet <= 1.2x.

Peers: Captum ``Saliency(abs=False)``, ``InputXGradient``, ``GuidedBackprop`` and
``Deconvolution``, with the parameters as loaded and frozen. Captum's guided backprop and
deconvolution hook only ``nn.ReLU``; EfficientNet-Lite uses ``nn.ReLU6``, so Captum
silently returns the plain gradient (``Saliency``) and its output differs from convlens's:
the ``peer diff`` column shows by how much. Its timing is still the cost of the same
passes, so the ratio stays meaningful.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from harness import BenchRow, Context, PeerSetting, SetupFn

from convlens.attribution.gradient import gradient_x_input, saliency
from convlens.attribution.guided import deconvnet, guided_backprop
from convlens.hooks import frozen

__all__ = ["ROWS"]


def _ours(fn: Callable[..., torch.Tensor]) -> SetupFn:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        model, x, classes = ctx.model, ctx.x, ctx.classes
        return lambda: fn(model, x, classes)

    return setup


def _captum(name: str, freeze: bool, **kwargs: object) -> SetupFn:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        import captum.attr

        module = ctx.model.module
        method = getattr(captum.attr, name)(module)
        x = ctx.x.detach().clone().requires_grad_()
        target = ctx.classes

        def run() -> torch.Tensor:
            if freeze:
                with frozen(module):
                    return method.attribute(x, target=target, **kwargs)
            return method.attribute(x, target=target, **kwargs)

        return run

    return setup


def _peers(name: str, **kwargs: object) -> list[PeerSetting]:
    return [
        PeerSetting(
            "captum",
            {"method": name, "params": "as loaded", **kwargs},
            _captum(name, False, **kwargs),
        ),
        PeerSetting(
            "captum", {"method": name, "params": "frozen", **kwargs}, _captum(name, True, **kwargs)
        ),
    ]


ROWS = [
    BenchRow(
        "saliency",
        "gradient",
        _ours(saliency),
        peers=_peers("Saliency", abs=False),
        settings={"target": "class tensor"},
    ),
    BenchRow(
        "gradient_x_input", "gradient", _ours(gradient_x_input), peers=_peers("InputXGradient")
    ),
    BenchRow(
        "guided_backprop",
        "gradient",
        _ours(guided_backprop),
        peers=_peers("GuidedBackprop"),
        settings={"rule": "at the activation outputs"},
    ),
    BenchRow("deconvnet", "gradient", _ours(deconvnet), peers=_peers("Deconvolution")),
]
