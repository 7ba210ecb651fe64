"""Rows for style transfer (issue 7, "Speed"): seconds to a fixed loss, L-BFGS against Adam.

For each size (256 and 512 px, the cat photo in the style of brick, the model's default
layers and weights) both optimisers minimise the *same* objective (Adam without jitter, so
neither sees random transforms). The untimed setup runs each for :data:`MAX_STEPS` steps
and takes as the fixed loss the larger of the two final losses (the level both reach);
the timed call is ``style_transfer`` run for exactly the number of steps that optimiser
needed to get there (from its own loss history, which is deterministic). So ``ms`` is the
time to that loss, start-up included; ``x floor`` is against one forward+backward of the
photo batch at the row's batch size (run with ``--batch-sizes 1``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from harness import BenchRow, Context

from convlens.style import style_transfer

__all__ = ["MAX_STEPS", "ROWS"]

MAX_STEPS = 60
_CACHE: dict[tuple[str, int], int] = {}


def _steps_to_fixed_loss(model: Any, size: int) -> dict[str, int]:
    runs = {
        opt: style_transfer(
            model, "sample:cat", "sample:brick", size=size, optimizer=opt, jitter=0, steps=MAX_STEPS
        )
        for opt in ("adam", "lbfgs")
    }
    # history is the objective (maximised) = -loss; the level both reach:
    target = min(float(r["history"][-1]) for r in runs.values())
    return {opt: int((r["history"] >= target).nonzero()[0]) + 1 for opt, r in runs.items()}


def _setup(optimizer: str, size: int) -> Callable[[Context], Callable[[], Any]]:
    def setup(ctx: Context) -> Callable[[], Any]:
        if (optimizer, size) not in _CACHE:
            _CACHE.update(
                {(opt, size): n for opt, n in _steps_to_fixed_loss(ctx.model, size).items()}
            )
        steps = _CACHE[(optimizer, size)]
        print(f"  style {optimizer} @ {size}px: {steps} steps to the fixed loss", file=sys.stderr)
        return lambda: style_transfer(
            ctx.model,
            "sample:cat",
            "sample:brick",
            size=size,
            optimizer=optimizer,
            jitter=0,
            steps=steps,
        )

    return setup


ROWS = [
    BenchRow(
        f"style transfer {opt} to fixed loss @ {size}px",
        "style",
        _setup(opt, size),
        settings={"optimizer": opt, "size": size, "max_steps": MAX_STEPS},
    )
    for size in (256, 512)
    for opt in ("lbfgs", "adam")
]
