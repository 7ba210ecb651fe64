"""Rows for fast feed-forward stylisation (issue 7, "Speed"): stylize images/s at 256 and 512 px.

``convlens.style.fast.stylize(net, image)`` on one RGB image of 256 x 256 and of 512 x 512
pixels (a :class:`~convlens.style.fast.StyleNet` at the default size, width 16 and 3
residual blocks; its speed does not depend on the trained weights), against the floor of
the network's bare forward pass under ``torch.no_grad`` on the same tensor. images/s is
``1000 / ms``; ``x floor`` is what ``stylize`` adds (input checks, eval-mode switching, a
copy to the CPU, the result record). The model and batch of the context are not used: run
with ``--batch-sizes 1``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from harness import BenchRow, Context

from convlens.style.fast import DEFAULT_BLOCKS, DEFAULT_WIDTH, StyleNet, stylize

__all__ = ["ROWS"]

SIZES = (256, 512)


def _net() -> StyleNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = StyleNet(DEFAULT_WIDTH, DEFAULT_BLOCKS)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def _image(size: int) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))


def _stylize(size: int) -> Callable[[Context], Callable[[], torch.Tensor]]:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        net, image = _net(), _image(size)
        return lambda: stylize(net, image).tensors["image"]

    return setup


def _floor(size: int) -> Callable[[Context], Callable[[], torch.Tensor]]:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        net, image = _net(), _image(size)

        def run() -> torch.Tensor:
            with torch.no_grad():
                return net(image)

        return run

    return setup


ROWS = [
    BenchRow(
        f"stylize: 1 image, {size} x {size} px",
        "style",
        _stylize(size),
        settings={"width": DEFAULT_WIDTH, "blocks": DEFAULT_BLOCKS, "size": size},
        floor=_floor(size),
        floor_name="StyleNet forward under no_grad",
    )
    for size in SIZES
]
