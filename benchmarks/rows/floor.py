"""The floor every gradient row is measured against, and reference rows around it.

Floor (DESIGN.md "Performance"): ``torch.autograd.grad(score, x)`` for the class logits
``score`` with the parameters frozen and the model in eval mode, at the row's batch size.
No gradient method can be cheaper than one forward and one backward to the input, so a
row's ratio to the floor is its overhead (or the number of passes it needs).

The reference rows: the floor timed against itself (its ratio shows the measurement noise
of this run), a forward pass without autograd (what the backward costs on top), and the
cost of entering and leaving the ``frozen`` and ``eval_mode`` contexts alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from harness import BenchRow, Context

from convlens.hooks import eval_mode, frozen

__all__ = ["ROWS", "contexts_setup", "floor_setup", "forward_setup"]


def floor_setup(ctx: Context) -> Callable[[], torch.Tensor]:
    """``d logit[class] / d x`` with parameters frozen and eval mode (entered per call)."""
    module = ctx.model.module
    x = ctx.x.detach().clone().requires_grad_()
    classes = ctx.classes[:, None]

    def run() -> torch.Tensor:
        with frozen(module), eval_mode(module):
            score = module(x).gather(1, classes)
            (grad,) = torch.autograd.grad(score.sum(), x)
        return grad

    return run


def forward_setup(ctx: Context) -> Callable[[], torch.Tensor]:
    """One forward pass under ``torch.no_grad`` (eval mode): no graph is recorded."""
    module = ctx.model.module
    x = ctx.x

    def run() -> torch.Tensor:
        with eval_mode(module), torch.no_grad():
            return module(x)

    return run


def contexts_setup(ctx: Context) -> Callable[[], None]:
    """Only enter and leave ``frozen`` + ``eval_mode`` (their share of the floor)."""
    module = ctx.model.module

    def run() -> None:
        with frozen(module), eval_mode(module):
            pass

    return run


ROWS = [
    BenchRow(
        "floor: autograd.grad(score, x)",
        "floor",
        floor_setup,
        settings={"params": "frozen", "mode": "eval"},
    ),
    BenchRow("forward only (no grad)", "floor", forward_setup, settings={"torch.no_grad": True}),
    BenchRow("frozen + eval_mode enter/exit", "floor", contexts_setup),
]
