"""Fast mode (issue 20): the faster floor against the eager one, and what was measured to choose it.

Each candidate runs side by side with the eager floor of the same batch: the gradient rows
against ``autograd.grad(score, x)`` (rows/floor.py), the forward rows against one eager
forward under ``torch.no_grad``. The fast model is a copy of the benchmark's model with
``Model.use_fast()`` (channels-last weights; batch norms folded for forward-only work);
the other rows isolate one ingredient each:

- ``channels-last`` alone (what fast mode does for gradients);
- ``bfloat16 autocast`` on top of channels-last (oneDNN bf16, where the CPU has it): faster
  on AVX512-BF16/AMX CPUs but the input gradient moves by ~40 % of its largest value on
  Lite0, so fast mode does not use it;
- batch norm folded without channels-last;
- the gradient through the folded, channels-last copy: faster, but exact only up to float
  rounding, and rounding flips a unit or two of Lite0's 12 M ReLU6 inputs across a clamp
  boundary (eager float32 flips one against float64 too), which moves the largest saliency
  value by 1.9e-3 of itself (the acceptance tolerance is 1e-3), so fast mode does not use
  it for gradients;
- ``torch.compile`` (inductor, CPU) only when ``CONVLENS_BENCH_COMPILE=1``: compiling takes
  minutes per batch size on 2 cores (it would dominate the run) and backward hooks, which
  every layer method uses, break or recompile its graphs.

The features row reads a middle layer (``blocks.5``) with :func:`convlens.hooks.capture`
on ``Model.forward_module`` (what feature extraction runs) against the same capture on the
eager module.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable

import torch
from harness import BenchRow, Context

from convlens.hooks import capture, eval_mode, forward_until_captured, frozen
from convlens.models.fast import fold_batchnorm
from convlens.models.model import Model
from rows.floor import forward_setup

__all__ = ["FEATURE_LAYER", "ROWS"]

FEATURE_LAYER = "blocks.5"
_EAGER_FORWARD = "eager forward (no grad)"
_EAGER_FEATURES = f"eager capture of {FEATURE_LAYER} (no grad)"


def _fast_model(ctx: Context) -> Model:
    """A fast-mode copy of the benchmark model (the eager one stays as it is)."""
    model = ctx.model
    return Model(copy.deepcopy(model.module), model.preprocessing, name=model.name, fast=True)


def _channels_last(module: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(module).to(memory_format=torch.channels_last)


def _gradient(
    module: torch.nn.Module, ctx: Context, *, bf16: bool = False
) -> Callable[[], torch.Tensor]:
    """The floor's call (rows/floor.py) on another module, optionally under bf16 autocast."""
    x = ctx.x.detach().clone().requires_grad_()
    classes = ctx.classes[:, None]

    def run() -> torch.Tensor:
        with frozen(module), eval_mode(module):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                score = module(x).float().gather(1, classes)
            (grad,) = torch.autograd.grad(score.sum(), x)
        return grad

    return run


def _forward(
    module: torch.nn.Module, ctx: Context, *, bf16: bool = False
) -> Callable[[], torch.Tensor]:
    x = ctx.x

    def run() -> torch.Tensor:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
        with eval_mode(module), torch.no_grad(), autocast:
            return module(x)

    return run


def _folded(module: torch.nn.Module, ctx: Context) -> torch.nn.Module:
    folded, _, reason = fold_batchnorm(module, ctx.x[:1])
    if folded is None:
        raise RuntimeError(reason)
    return folded


def fast_floor_setup(ctx: Context) -> Callable[[], torch.Tensor]:
    """The gradient floor on what fast mode differentiates when nothing is hooked
    (Model.score_module: the batch-norm-folded, channels-last copy)."""
    return _gradient(_fast_model(ctx).score_module(), ctx)


def fast_forward_setup(ctx: Context) -> Callable[[], torch.Tensor]:
    """Model.logits' module under fast mode (folded, channels-last), one forward."""
    fast = _fast_model(ctx)
    with torch.no_grad():
        module = fast.forward_module()
    return _forward(module, ctx)


def _features(model: Model, fast: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            module = model.forward_module([FEATURE_LAYER]) if fast else model.module
            with eval_mode(module), capture(module, [FEATURE_LAYER]) as acts:
                module(x)
            return acts[FEATURE_LAYER].mean(dim=(2, 3))

    return run


def _features_no_predictions(model: Model) -> Callable[[torch.Tensor], torch.Tensor]:
    """What ``features --fast --no-predictions`` runs per batch: the forward stops once the
    layer has run."""

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            module = model.forward_module([FEATURE_LAYER])
            with eval_mode(module), capture(module, [FEATURE_LAYER], stop=True) as acts:
                forward_until_captured(module, x)
            return acts[FEATURE_LAYER].mean(dim=(2, 3))

    return run


def fast_features_no_predictions_setup(ctx: Context) -> Callable[[], torch.Tensor]:
    run, x = _features_no_predictions(_fast_model(ctx)), ctx.x
    return lambda: run(x)


def fast_features_setup(ctx: Context) -> Callable[[], torch.Tensor]:
    run, x = _features(_fast_model(ctx), True), ctx.x
    return lambda: run(x)


def eager_features_setup(ctx: Context) -> Callable[[], torch.Tensor]:
    run, x = _features(ctx.model, False), ctx.x
    return lambda: run(x)


def _compiled(module: torch.nn.Module) -> torch.nn.Module:
    return torch.compile(_channels_last(module))  # type: ignore[return-value]


ROWS = [
    BenchRow(
        "fast floor: autograd.grad, fast=True (folded BN + channels-last)",
        "fast",
        fast_floor_setup,
        settings={"fast": True, "target": "<= 0.7x floor at batch 8"},
    ),
    BenchRow(
        "channels-last + bf16 autocast grad (not used)",
        "fast",
        lambda ctx: _gradient(_channels_last(ctx.model.module), ctx, bf16=True),
        settings={"autocast": "bfloat16", "memory_format": "channels_last"},
    ),
    BenchRow(
        "channels-last grad alone (what hooked methods get)",
        "fast",
        lambda ctx: _gradient(_fast_model(ctx).module, ctx),
        settings={"memory_format": "channels_last"},
    ),
    BenchRow(
        "fast forward: fast=True (folded BN + channels-last)",
        "fast",
        fast_forward_setup,
        settings={"fast": True, "target": "<= 0.6x eager forward at batch 8"},
        floor=forward_setup,
        floor_name=_EAGER_FORWARD,
    ),
    BenchRow(
        "channels-last forward (no folding)",
        "fast",
        lambda ctx: _forward(_channels_last(ctx.model.module), ctx),
        settings={"memory_format": "channels_last"},
        floor=forward_setup,
        floor_name=_EAGER_FORWARD,
    ),
    BenchRow(
        "folded BN forward (no channels-last)",
        "fast",
        lambda ctx: _forward(_folded(ctx.model.module, ctx), ctx),
        settings={"fold_batchnorm": True},
        floor=forward_setup,
        floor_name=_EAGER_FORWARD,
    ),
    BenchRow(
        "folded + channels-last + bf16 autocast forward (not used)",
        "fast",
        lambda ctx: _forward(_channels_last(_folded(ctx.model.module, ctx)), ctx, bf16=True),
        settings={"autocast": "bfloat16", "fold_batchnorm": True, "memory_format": "channels_last"},
        floor=forward_setup,
        floor_name=_EAGER_FORWARD,
    ),
    BenchRow(
        f"fast features, no predictions: the forward stops at {FEATURE_LAYER}, fast=True",
        "fast",
        fast_features_no_predictions_setup,
        settings={"fast": True, "layer": FEATURE_LAYER, "predictions": False},
        floor=eager_features_setup,
        floor_name=_EAGER_FEATURES,
    ),
    BenchRow(
        f"fast features: capture {FEATURE_LAYER}, fast=True",
        "fast",
        fast_features_setup,
        settings={"fast": True, "layer": FEATURE_LAYER, "code": "spatial mean"},
        floor=eager_features_setup,
        floor_name=_EAGER_FEATURES,
    ),
]

if os.environ.get("CONVLENS_BENCH_COMPILE") == "1":
    ROWS += [
        BenchRow(
            "torch.compile (inductor) + channels-last grad",
            "fast",
            lambda ctx: _gradient(_compiled(ctx.model.module), ctx),
            settings={"compile": "inductor", "memory_format": "channels_last"},
        ),
        BenchRow(
            "torch.compile (inductor) + channels-last forward",
            "fast",
            lambda ctx: _forward(_compiled(ctx.model.module), ctx),
            settings={"compile": "inductor", "memory_format": "channels_last"},
            floor=forward_setup,
            floor_name=_EAGER_FORWARD,
        ),
    ]
