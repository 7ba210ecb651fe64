"""Rows for the attacks (issue 6, "Speed"): PGD-10 against ten floors and torchattacks; black-box queries/s.

- **PGD-10 (L-inf 4/255, alpha 1/255, random start)**: :func:`convlens.adversarial.pgd`
  inside ``inference_context`` (eval mode, frozen parameters), as ``attack()`` runs it,
  against **ten floors** (ten ``torch.autograd.grad(logits[class], x)`` with frozen
  parameters; target <= 1.05x) and against ``torchattacks.PGD`` with the same settings
  (normalisation inside the wrapped module, pixel-space input). Both draw their random
  start from the global generator seeded the same way inside the timed call, so they
  compute the same images: the peer's ``difference`` column is the check.
- **Square, ZOO (black-box)**: a fixed number of queries per image (targeted at a class far
  from the photo's, so no image stops early), against the same number of forward passes
  without autograd at the same batch size. queries/s = batch x queries / time; the ratio
  to the floor is the attack's overhead over the queries themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from harness import BenchRow, Context, PeerSetting
from torch import nn

from convlens.adversarial import Oracle, pgd, pixel_forward, square, zoo
from convlens.hooks import eval_mode, frozen, inference_context

__all__ = ["ROWS"]

EPS, ALPHA, STEPS = 4 / 255, 1 / 255, 10
#: black-box rows: queries per image
SQUARE_QUERIES = 20
ZOO_COORDINATES = 4  # one ZOO iteration = 2 x 4 + 1 = 9 queries per image
ZOO_QUERIES = 2 * ZOO_COORDINATES + 1


def _pixels(ctx: Context) -> torch.Tensor:
    return torch.round(ctx.model.denormalize(ctx.x).clamp(0, 1) * 255) / 255


def ten_floors_setup(ctx: Context) -> Callable[[], torch.Tensor]:
    """Ten ``d logit[class] / d x`` with frozen parameters and eval mode."""
    module = ctx.model.module
    x = ctx.x.detach().clone().requires_grad_()
    classes = ctx.classes[:, None]

    def run() -> torch.Tensor:
        with frozen(module), eval_mode(module):
            for _ in range(STEPS):
                (grad,) = torch.autograd.grad(module(x).gather(1, classes).sum(), x)
        return grad

    return run


def _random_start(x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    return (x + torch.empty_like(x).uniform_(-EPS, EPS)).clamp(0, 1)


def pgd_setup(ctx: Context) -> Callable[[], torch.Tensor]:
    model, x, y = ctx.model, _pixels(ctx), ctx.classes
    forward = pixel_forward(model)

    def run() -> torch.Tensor:
        with inference_context(model.module):
            return pgd(forward, x, y, EPS, steps=STEPS, alpha=ALPHA, start=_random_start(x))

    return run


class _PixelModule(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.net = model.module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.model.normalize(x))


def torchattacks_pgd_setup(ctx: Context) -> Callable[[], torch.Tensor]:
    import torchattacks

    wrapped = _PixelModule(ctx.model).eval()
    atk = torchattacks.PGD(wrapped, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
    x, y = _pixels(ctx), ctx.classes

    def run() -> torch.Tensor:
        torch.manual_seed(0)  # the same start as convlens's row
        return atk(x, y)

    return run


def _far_classes(ctx: Context) -> torch.Tensor:
    return (ctx.classes + 500) % 1000


def forwards_setup(n: int) -> Callable[[Context], Callable[[], torch.Tensor]]:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        module, x = ctx.model.module, ctx.x

        def run() -> torch.Tensor:
            with eval_mode(module), torch.no_grad():
                for _ in range(n):
                    out = module(x)
            return out

        return run

    return setup


def square_setup(ctx: Context) -> Callable[[], torch.Tensor]:
    model, x, goal = ctx.model, _pixels(ctx), _far_classes(ctx)
    forward = pixel_forward(model)

    def run() -> torch.Tensor:
        with inference_context(model.module):
            adv, _ = square(
                Oracle(forward),
                x,
                goal,
                EPS,
                max_queries=SQUARE_QUERIES,
                targeted=True,
                generator=torch.Generator().manual_seed(0),
            )
        return adv

    return run


def zoo_setup(ctx: Context) -> Callable[[], torch.Tensor]:
    model, x, goal = ctx.model, _pixels(ctx), _far_classes(ctx)
    forward = pixel_forward(model)

    def run() -> torch.Tensor:
        with inference_context(model.module):
            adv, _ = zoo(
                Oracle(forward),
                x,
                goal,
                max_queries=ZOO_QUERIES,
                coordinates=ZOO_COORDINATES,
                targeted=True,
                generator=torch.Generator().manual_seed(0),
            )
        return adv

    return run


ROWS = [
    BenchRow(
        f"pgd: {STEPS} steps L-inf 4/255",
        "attacks",
        pgd_setup,
        peers=[
            PeerSetting(
                "torchattacks",
                {"eps": "4/255", "alpha": "1/255", "steps": STEPS, "random_start": True},
                torchattacks_pgd_setup,
            )
        ],
        settings={
            "eps": "4/255",
            "alpha": "1/255",
            "steps": STEPS,
            "random start": "same as the peer's",
        },
        floor=ten_floors_setup,
        floor_name=f"{STEPS} floors (autograd.grad of the logit)",
    ),
    BenchRow(
        f"square: {SQUARE_QUERIES} queries/image",
        "attacks",
        square_setup,
        settings={
            "eps": "4/255",
            "queries per image": SQUARE_QUERIES,
            "targeted": "far class (no early stop)",
        },
        floor=forwards_setup(SQUARE_QUERIES),
        floor_name=f"{SQUARE_QUERIES} no-grad forwards",
    ),
    BenchRow(
        f"zoo: {ZOO_QUERIES} queries/image",
        "attacks",
        zoo_setup,
        settings={
            "coordinates": ZOO_COORDINATES,
            "queries per image": ZOO_QUERIES,
            "targeted": "far class (no early stop)",
        },
        floor=forwards_setup(ZOO_QUERIES),
        floor_name=f"{ZOO_QUERIES} no-grad forwards",
    ),
]
