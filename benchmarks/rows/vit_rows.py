"""Rows for vision transformers (issue 16 part 2): gradient methods on a ViT against its floor.

Two models, whatever ``--model`` is (each row brings its model and its own floor):

- ``vit_tiny``: convlens's ViT (``convlens.models.vit.vit_tiny``) with ViT-Tiny's shape
  (224 px, 16 px patches, 192 wide, 12 blocks, 3 heads, 5.7 M parameters), randomly
  initialised with seed 0 (no weights are downloaded). Inputs: the benchmark's photos,
  taken back to pixels and normalised with ImageNet's mean and std.
- ``digits_vit``: the small ViT convlens trains on the 8x8 digits (cached). Inputs: the
  first held-out digits.

Floor: ``torch.autograd.grad(score, x)`` on that ViT (parameters frozen, eval mode), at the
row's batch size; for integrated gradients ``n_steps`` such gradients in chunks of 16
(the IG row's own chunking). Rows: saliency, Grad-CAM on the token layer convlens picks by
default (the last block's ``norm1``), integrated gradients (16 steps) and attention rollout
(forward only: its ratio sits below 1). Target (DESIGN.md, issue 16): gradient methods
within 1.1x of the floor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from harness import BenchRow, Context, SetupFn

import convlens
from convlens.attribution.attention import attention_rollout
from convlens.attribution.base import default_cam_layer
from convlens.attribution.cam import gradcam
from convlens.attribution.gradient import saliency
from convlens.attribution.integrated import baseline_input, integrated_gradients
from convlens.hooks import eval_mode, frozen

__all__ = ["ROWS"]

IG_STEPS, IG_CHUNK = 16, 16
_CACHE: dict[tuple[str, int], tuple[Any, torch.Tensor, torch.Tensor]] = {}


def _inputs(kind: str, ctx: Context) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """``(model, x, classes)`` for a ViT at the context's batch size (built once, untimed)."""
    n = ctx.x.shape[0]
    if (kind, n) not in _CACHE:
        if kind == "vit_tiny":
            from convlens.models.vit import vit_tiny

            torch.manual_seed(0)
            model = convlens.wrap(vit_tiny().eval(), input_size=224, name="vit_tiny (random)")
            pixels = ctx.model.denormalize(ctx.x).clamp(0, 1)
            if pixels.shape[1] != 3:
                pixels = pixels.expand(-1, 3, -1, -1)
            if tuple(pixels.shape[-2:]) != (224, 224):
                pixels = F.interpolate(
                    pixels, size=(224, 224), mode="bilinear", antialias=True, align_corners=False
                )
            x = model.normalize(pixels)
        else:
            from convlens.models.small import load_dataset

            model = convlens.load_model("digits_vit")
            digits, _ = load_dataset("digits", "test")
            x = model.normalize(digits[:n])
        _CACHE[(kind, n)] = (model, x, model.logits(x).argmax(dim=1))
    return _CACHE[(kind, n)]


def _floor(kind: str) -> SetupFn:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        model, x, classes = _inputs(kind, ctx)
        module, xr = model.module, x.detach().clone().requires_grad_()

        def run() -> torch.Tensor:
            with frozen(module), eval_mode(module):
                (grad,) = torch.autograd.grad(module(xr).gather(1, classes[:, None]).sum(), xr)
            return grad

        return run

    return setup


def _ig_floor(kind: str) -> SetupFn:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        model, x, classes = _inputs(kind, ctx)
        module = model.module
        base = baseline_input(model, x, "black")
        alphas = (torch.arange(IG_STEPS, dtype=x.dtype) + 0.5) / IG_STEPS
        rows = (base[:, None] + alphas.view(1, -1, 1, 1, 1) * (x - base)[:, None]).flatten(0, 1)
        targets = classes.repeat_interleave(IG_STEPS)

        def run() -> torch.Tensor:
            total = torch.zeros_like(x[:1])
            with frozen(module), eval_mode(module):
                for z, c in zip(rows.split(IG_CHUNK), targets.split(IG_CHUNK)):
                    z = z.detach().requires_grad_()
                    (grad,) = torch.autograd.grad(module(z).gather(1, c[:, None]).sum(), z)
                    total += grad.sum(0, keepdim=True)
            return total

        return run

    return setup


def _method(kind: str, name: str) -> SetupFn:
    def setup(ctx: Context) -> Callable[[], torch.Tensor]:
        model, x, classes = _inputs(kind, ctx)
        if name == "saliency":
            return lambda: saliency(model, x, classes)
        if name == "gradcam":
            layer = default_cam_layer(model)  # found once, untimed
            return lambda: gradcam(model, x, classes, layer=layer)
        if name == "integrated_gradients":
            return lambda: integrated_gradients(model, x, classes, n_steps=IG_STEPS, chunk=IG_CHUNK)
        return lambda: attention_rollout(model, x, classes)

    return setup


def _rows(kind: str, layer: str) -> list[BenchRow]:
    group = f"vit ({kind})"
    floor_name = "autograd.grad(score, x) on the ViT"
    return [
        BenchRow(
            "saliency", group, _method(kind, "saliency"), floor=_floor(kind), floor_name=floor_name
        ),
        BenchRow(
            f"gradcam, token layer {layer}",
            group,
            _method(kind, "gradcam"),
            settings={"layer": layer},
            floor=_floor(kind),
            floor_name=floor_name,
        ),
        BenchRow(
            f"integrated_gradients n_steps={IG_STEPS}",
            group,
            _method(kind, "integrated_gradients"),
            settings={"chunk": IG_CHUNK},
            floor=_ig_floor(kind),
            floor_name=f"{IG_STEPS} x autograd.grad, chunk {IG_CHUNK}",
        ),
        BenchRow(
            "attention_rollout (forward only)",
            group,
            _method(kind, "attention_rollout"),
            floor=_floor(kind),
            floor_name=floor_name,
        ),
    ]


ROWS = _rows("vit_tiny", "blocks.11.norm1") + _rows("digits_vit", "blocks.2.norm1")
