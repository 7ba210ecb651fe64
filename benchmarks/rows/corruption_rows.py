"""Rows for the ImageNet-C corruptions (issue 6, "Speed": corruption images/s).

One row per corruption: ``convlens.robustness.corrupt(pixels, name, 3)`` on the batch of real
photos at the model's resolution, against its floor, the **bare package loop**: the same
``imagecorruptions.corrupt`` calls on uint8 arrays prepared beforehand, under a fixed numpy
seed. ``x floor`` is therefore convlens's own cost around the package (8-bit rounding, the
per-image seed and the restore of numpy's random state, the tensor <-> array copies); the
corruption itself is the package's. Images per second are ``batch / (ms / 1000)``.

There is no peer: the package *is* the implementation (convlens does not re-implement the
corruptions). Severity 3, the middle of the range, is timed; glass blur's first call
compiles its numba kernel, which the harness's warm-up absorbs.

``python benchmarks/rows/corruption_rows.py [--batch 8] [--repeats 5]`` prints images/s for
every corruption without the harness.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

if __name__ == "__main__":  # run as a script: make harness and convlens importable
    sys.path[:0] = [
        str(Path(__file__).resolve().parents[1]),
        str(Path(__file__).resolve().parents[2] / "src"),
    ]

from harness import BenchRow, Context

from convlens.robustness.corruptions import CORRUPTIONS, corrupt

__all__ = ["ROWS", "SEVERITY", "package_floor"]

#: the severity every row uses
SEVERITY = 3


def _pixels(ctx: Context) -> torch.Tensor:
    return ctx.model.denormalize(ctx.x).detach().clamp(0, 1)


def _row(name: str) -> Callable[[Context], Callable[[], torch.Tensor]]:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        pixels = _pixels(ctx)
        return lambda: corrupt(pixels, name, SEVERITY, seed=0)

    return setup


def package_floor(name: str) -> Callable[[Context], Callable[[], list[np.ndarray]]]:
    """The bare ``imagecorruptions.corrupt`` loop over uint8 arrays made beforehand."""

    def setup(ctx: Context) -> Callable[[], list[np.ndarray]]:
        from imagecorruptions import corrupt as package_corrupt

        arrays = [
            np.ascontiguousarray(a)
            for a in (_pixels(ctx) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        ]
        extra = {"seed": 0} if name in ("glass_blur", "impulse_noise") else {}

        def run() -> list[np.ndarray]:
            np.random.seed(0)
            return [
                package_corrupt(a, severity=SEVERITY, corruption_name=name, **extra) for a in arrays
            ]

        return run

    return setup


ROWS = [
    BenchRow(
        f"corrupt: {name}",
        "corruptions",
        _row(name),
        settings={"severity": SEVERITY, "seeded per image": True},
        floor=package_floor(name),
        floor_name="imagecorruptions-imaug loop on uint8 arrays",
    )
    for name in CORRUPTIONS
]


def main(argv: list[str] | None = None) -> None:
    """Images/s of every corruption (medians), without the harness."""
    import argparse
    import time

    import convlens

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = convlens.load_model()
    pixels = model.denormalize(
        model.prepare(["sample:cat", "sample:coffee", "sample:daisy", "sample:palace"]).x
    )
    pixels = pixels.repeat((args.batch + 3) // 4, 1, 1, 1)[: args.batch]
    print(
        f"{'corruption':18s} {'images/s':>9s}  (batch {args.batch}, severity {SEVERITY}, {args.threads} thread(s))"
    )
    for name in CORRUPTIONS:
        corrupt(pixels[:1], name, SEVERITY)  # warm-up (numba compile for glass blur)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            corrupt(pixels, name, SEVERITY)
            times.append(time.perf_counter() - start)
        print(f"{name:18s} {args.batch / float(np.median(times)):9.1f}")


if __name__ == "__main__":
    main()
