"""Rows for LRP: the epsilon rule and the alpha-beta (z+) rule, z^B first layer, vs the floor.

Peer: none applicable. Captum's ``LRP`` (0.9) only accepts layers whose exact type is in
its rule table (``Conv2d``, ``Linear``, ``BatchNorm2d``, pooling) or its non-linear list
(``ReLU``, ``Dropout``, ``Tanh``): it raises ``TypeError`` on EfficientNet-Lite's
``SamePadConv2d`` and has no way to be given a rule for ``ReLU6``; it also applies the
epsilon rule to BatchNorm as a layer of its own instead of folding it, and back-propagates
the residual ``+`` (not a module) as a gradient. Where Captum's LRP does apply (plain ReLU
nets without BatchNorm), ``tests/attribution/test_lrp.py`` checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from harness import BenchRow, Context

from convlens.attribution.lrp import lrp

__all__ = ["ROWS"]

_NO_PEER = "captum LRP n/a (no rule for SamePadConv2d, ReLU6)"


def _lrp(**options: object) -> Callable[[Context], Callable[[], torch.Tensor]]:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        model, x, classes = ctx.model, ctx.x, ctx.classes
        return lambda: lrp(model, x, classes, **options)  # type: ignore[arg-type]

    return setup


ROWS = [
    BenchRow(
        "lrp epsilon",
        "lrp",
        _lrp(rule="epsilon"),
        settings={"rule": "epsilon", "epsilon": 1e-6, "first_layer": "zB", "peer": _NO_PEER},
    ),
    BenchRow(
        "lrp alpha_beta",
        "lrp",
        _lrp(rule="alpha_beta"),
        settings={
            "rule": "alpha_beta",
            "alpha": 1,
            "beta": 0,
            "first_layer": "zB",
            "peer": _NO_PEER,
        },
    ),
    BenchRow(
        "lrp alpha_beta 2-1",
        "lrp",
        _lrp(rule="alpha_beta", alpha=2.0, beta=1.0),
        settings={
            "rule": "alpha_beta",
            "alpha": 2,
            "beta": 1,
            "first_layer": "zB",
            "peer": _NO_PEER,
        },
    ),
]
