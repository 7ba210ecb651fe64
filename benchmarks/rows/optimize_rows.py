"""Rows for the optimisation engine (issue 5, "Speed"): steps/s and batched class visualisation.

- **Engine steps against the transformed-batch floor** (target <= 1.2x):
  ``optimize(model, class_score(classes), steps=S)`` at the row's batch size (one image per
  photo of the batch, each ascending that photo's top-1 logit, default settings: decorrelated
  Fourier parameterisation, the standard jitter/scale/rotation, Adam at lr 0.05) against a
  **hand-written loop in plain torch** doing the same ``S`` steps: a fresh seeded spectrum
  and Adam, then per step the ``1/f``-scaled ``irfft2``, the colour matrix and a sigmoid, the
  four random draws (jitter, zoom, rotation, jitter) fused into one ``affine_grid`` +
  ``grid_sample``, normalisation, the network, the logits of the targets, ``backward`` and
  ``Adam.step``, with the parameters frozen and eval mode. Its random draws come from the
  same generator in the same order as the engine's, so it computes the same images:
  ``python benchmarks/rows/optimize_rows.py --check`` prints the largest difference of the
  final images (0, bit-identical, on torch 2.13 CPU). The engine also does what the floor
  does not: an objective history (one ``.item()`` per step), the capture and inference
  contexts, and one closing forward pass without autograd that reports each image's
  objective, about ``1 / (3 S)`` of the floor.
- **Batched multi-class visualisation**: ``visualize_class(model, [10 classes], steps=S)``
  (one optimisation of a batch of 10) against its own floor, 10 separate
  ``visualize_class(model, c, steps=S)`` calls. ``x floor`` below 1 is the speed-up of
  batching (its inverse); images per second are ``10 / (ms / 1000)``. The row does not use
  the photos or the batch size, so it is the same at every ``--batch-sizes`` value: run
  it with ``--batch-sizes 1`` (``--only visualize_class``) to time it once.

``S`` is :data:`STEPS` (8) so that a row takes seconds: the per-step cost is what is
compared, and start-up (parameter creation, contexts) is included, as a user pays it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

if __name__ == "__main__":  # run as a script for --check: make harness and convlens importable
    sys.path[:0] = [
        str(Path(__file__).resolve().parents[1]),
        str(Path(__file__).resolve().parents[2] / "src"),
    ]

from harness import BenchRow, Context

from convlens.hooks import eval_mode, frozen
from convlens.optimize import class_score, optimize, visualize_class
from convlens.optimize.engine import DEFAULT_DECAY_POWER
from convlens.optimize.param import COLOR_CORRELATION_SQRT

__all__ = ["CLASSES", "ROWS", "STEPS", "engine_floor_setup", "separate_classes_setup"]

#: optimisation steps per timed call
STEPS = 8
#: the 10 classes of the batched visualisation row: a seeded draw of 10 of the 1,000
CLASSES: list[int] = torch.randperm(1000, generator=torch.Generator().manual_seed(5))[:10].tolist()
#: the engine's defaults, restated here (the floor computes them by hand)
_LR, _INIT_STD, _FOURIER_GAIN, _SEED = 0.05, 0.01, 0.25, 0


# -- the engine against its hand-written floor -----------------------------------------------


def _fourier_weights(h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
    """``gain / max(f, 1 / max(H, W))^decay`` for each ``rfft2`` coefficient."""
    freq = (
        torch.fft.fftfreq(h, dtype=torch.float64)[:, None] ** 2
        + torch.fft.rfftfreq(w, dtype=torch.float64)[None, :] ** 2
    ).sqrt()
    return (freq.clamp_min(1.0 / max(h, w)).pow(-DEFAULT_DECAY_POWER) * _FOURIER_GAIN).to(dtype)


def _affine(b: int, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
    """The standard transforms' draws (jitter, zoom, rotation, jitter), fused into one
    ``(B, 2, 3)`` ``affine_grid`` matrix, drawn in the engine's order."""
    j = max(1, round(min(h, w) * 8 / 224))
    zooms = torch.tensor([0.9 + 0.02 * i for i in range(11)], dtype=torch.float64)
    first = torch.randint(-j, j + 1, (b, 2), generator=generator).double()
    zoom = zooms[torch.randint(len(zooms), (b,), generator=generator)]
    angle = torch.deg2rad((2 * torch.rand(b, generator=generator, dtype=torch.float64) - 1) * 10.0)
    second = torch.randint(
        -max(1, j // 2), max(1, j // 2) + 1, (b, 2), generator=generator
    ).double()

    def shift(s: torch.Tensor) -> torch.Tensor:
        m = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
        m[:, 0, 2], m[:, 1, 2] = s[:, 1], s[:, 0]
        return m

    turn = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
    cos, sin = angle.cos(), angle.sin()
    turn[:, 0, 0], turn[:, 0, 1], turn[:, 1, 0], turn[:, 1, 1] = (
        zoom * cos,
        zoom * sin,
        -zoom * sin,
        zoom * cos,
    )
    forward = shift(second) @ turn @ shift(first)  # rotation @ zoom = turn (both about the centre)
    to_pixels = torch.diag(torch.tensor([w / 2, h / 2, 1.0], dtype=torch.float64))
    to_unit = torch.diag(torch.tensor([2 / w, 2 / h, 1.0], dtype=torch.float64))
    return (to_unit @ torch.linalg.inv(forward) @ to_pixels)[:, :2]


def engine_floor_setup(ctx: Context) -> Callable[[], torch.Tensor]:
    """:data:`STEPS` steps of Fourier image -> transforms -> model -> logits -> backward -> Adam."""
    model, module = ctx.model, ctx.model.module
    b, c, (h, w) = ctx.batch_size, model.channels, model.input_size
    dtype = ctx.x.dtype
    weights = _fourier_weights(h, w, dtype)
    color = COLOR_CORRELATION_SQRT.to(dtype)
    mean = torch.tensor(model.preprocessing.mean, dtype=dtype).view(-1, 1, 1)
    std = torch.tensor(model.preprocessing.std, dtype=dtype).view(-1, 1, 1)
    targets = ctx.classes[:, None]

    def run() -> torch.Tensor:
        generator = torch.Generator().manual_seed(_SEED)
        spectrum = (
            (
                torch.randn((b, c, h, w // 2 + 1, 2), generator=generator, dtype=torch.float64)
                * _INIT_STD
            )
            .to(dtype)
            .requires_grad_()
        )
        adam = torch.optim.Adam([spectrum], lr=_LR)
        with frozen(module), eval_mode(module):
            for _ in range(STEPS):
                adam.zero_grad(set_to_none=True)
                spatial = torch.fft.irfft2(
                    torch.view_as_complex(spectrum) * weights, s=(h, w), norm="ortho"
                )
                image = torch.sigmoid(torch.einsum("ij,bjhw->bihw", color, spatial))
                grid = F.affine_grid(
                    _affine(b, h, w, generator).to(dtype), [b, c, h, w], align_corners=False
                )
                seen = F.grid_sample(
                    image, grid, mode="bilinear", padding_mode="reflection", align_corners=False
                )
                loss = -module((seen - mean) / std).gather(1, targets).sum()
                loss.backward()  # type: ignore[no-untyped-call]
                adam.step()
        return spectrum.detach()

    return run


def _engine(ctx: Context) -> Callable[[], torch.Tensor]:
    model, objective = ctx.model, class_score(ctx.classes.tolist())
    batch = ctx.batch_size
    return lambda: optimize(model, objective, steps=STEPS, batch=batch, generator=_SEED).tensors[
        "image"
    ]


# -- batched against separate class visualisations ----------------------------------------


def _batched_classes(ctx: Context) -> Callable[[], torch.Tensor]:
    model = ctx.model
    return lambda: visualize_class(model, CLASSES, steps=STEPS).tensors["image"]


def separate_classes_setup(ctx: Context) -> Callable[[], list[torch.Tensor]]:
    """The same 10 classes, one ``visualize_class`` call each."""
    model = ctx.model
    return lambda: [visualize_class(model, c, steps=STEPS).tensors["image"] for c in CLASSES]


ROWS = [
    BenchRow(
        f"optimize: {STEPS} steps, class logits",
        "optimize",
        _engine,
        settings={"param": "fourier", "transforms": "standard", "optimizer": "adam"},
        floor=engine_floor_setup,
        floor_name=f"{STEPS} hand-written steps (plain torch)",
    ),
    BenchRow(
        f"visualize_class: 10 classes in one batch, {STEPS} steps",
        "optimize",
        _batched_classes,
        settings={"classes": 10, "images per call": 10},
        floor=separate_classes_setup,
        floor_name="10 separate visualize_class calls",
    ),
]


# -- the floor computes what the engine computes ------------------------------------------


def check(batch: int = 2, model_name: str = "efficientnet_lite0") -> float:
    """Largest difference between the floor's and the engine's final images."""
    from harness import make_contexts

    import convlens

    model = convlens.load_model(model_name)
    ctx = make_contexts(model, [batch], threads=torch.get_num_threads())[batch]
    spectrum = engine_floor_setup(ctx)()
    h, w = model.input_size
    spatial = torch.fft.irfft2(
        torch.view_as_complex(spectrum) * _fourier_weights(h, w, spectrum.dtype),
        s=(h, w),
        norm="ortho",
    )
    floor_image = torch.sigmoid(
        torch.einsum("ij,bjhw->bihw", COLOR_CORRELATION_SQRT.to(spectrum.dtype), spatial)
    )
    engine_image = _engine(ctx)()
    return float((floor_image - engine_image).abs().max())


if __name__ == "__main__":
    if "--check" not in sys.argv:
        sys.exit(
            "usage: python benchmarks/rows/optimize_rows.py --check  (timings: benchmarks/run.py --only optimize)"
        )
    torch.set_num_threads(2)
    print(f"max |floor image - engine image| after {STEPS} steps at batch 2: {check():.2e}")
