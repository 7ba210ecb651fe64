"""DeepDream: amplify whatever a layer sees in a photo, octave by octave, at any image size.

Mordvintsev, Olah & Tyka, "Inceptionism: Going Deeper into Neural Networks", Google
Research blog, 2015. Gradient ascent on the photo itself for ``f(x) = mean A_l(x)^2`` (the
:func:`~convlens.optimize.objectives.deepdream` objective, or any objective given):

    x <- clip( x + lr * g / mean|g| ),   g = d f(roll(x, dy, dx)) / d x   (unrolled)

with a random roll of up to ``jitter`` pixels each step (so tile seams and the network's
stride grid do not imprint), on an *octave* pyramid: the photo is first dreamt at
``1 / octave_scale^(octaves-1)`` of its size, and the detail added at each octave is carried
up to the next. Images larger than ``tile`` pixels are processed tile by tile (the model
is fully convolutional up to its pooling), so the size is limited by time, not memory.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from convlens.errors import BadInputError
from convlens.hooks import capture, forward_until_captured, inference_context
from convlens.layers import resolve_layer
from convlens.models.model import Model
from convlens.optimize.objectives import Objective, ObjectiveContext, as_objective, deepdream
from convlens.progress import ProgressFn
from convlens.results import Result, make_provenance

__all__ = ["deep_dream"]


def deep_dream(
    model: Model,
    image: torch.Tensor,
    layer: str | None = None,
    *,
    objective: Objective | None = None,
    octaves: int = 4,
    octave_scale: float = 1.4,
    steps: int = 20,
    lr: float = 0.01,
    jitter: int = 32,
    tile: int = 512,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> Result:
    """DeepDream on a photo in pixel space ``(C, H, W)`` or ``(1, C, H, W)``, values in [0, 1].

    Parameters
    ----------
    model
        The network; its preprocessing normalises what it sees (no resize or crop: the
        photo keeps its size).
    image
        The photo, image space in [0, 1] (``convlens.data.images.load_image``); colour
        photos are converted for grayscale models.
    layer
        Dotted name of the layer to amplify (``deepdream(layer)``); or give ``objective``.
    objective
        Any objective to ascend instead (e.g. ``channel("blocks.8", 12)``).
    octaves, octave_scale
        Number of scales and the ratio between consecutive ones (smallest first).
    steps
        Gradient steps per octave.
    lr
        Step size in pixel units, after normalising the gradient by its mean magnitude.
    jitter
        Largest random roll in pixels, each step (0: none).
    tile
        Largest tile side; bigger images are processed in tiles.
    seed
        Seeds the rolls.
    progress
        ``progress(done, total)`` after each step (``total = octaves * steps``).

    Returns
    -------
    Result
        Kind ``"dream"``: ``image`` ``(1, C, H, W)`` in [0, 1] at the photo's size;
        ``objective_before`` / ``objective_after`` ``(octaves,)``: the objective at the
        start and end of each octave (measured without jitter).
    """
    if (layer is None) == (objective is None):
        raise BadInputError(
            "give a layer (DeepDream's 'boost everything') or an objective, not both"
        )
    if layer is not None:
        resolve_layer(model.module, layer)  # a typo fails here, with suggestions
        objective = deepdream(layer)
    assert objective is not None
    objective = as_objective(objective)
    for name in objective.layers:
        resolve_layer(model.module, name)
    for name, value, low in (
        ("octaves", octaves, 1),
        ("steps", steps, 1),
        ("tile", tile, 32),
        ("jitter", jitter, 0),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise BadInputError(f"{name} must be a whole number >= {low}, got {value!r}")
    if not (isinstance(octave_scale, (int, float)) and octave_scale >= 1.0):
        raise BadInputError(f"octave_scale must be >= 1, got {octave_scale!r}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise BadInputError(f"lr must be a positive number, got {lr!r}")
    pixels = _as_batch(model, image)
    h, w = pixels.shape[-2:]
    sizes = [
        (max(8, round(h / octave_scale**k)), max(8, round(w / octave_scale**k)))
        for k in range(octaves - 1, -1, -1)
    ]
    generator = torch.Generator().manual_seed(seed)
    total, done = octaves * steps, 0
    before, after = [], []
    started = time.perf_counter()
    detail = torch.zeros_like(pixels[..., : sizes[0][0], : sizes[0][1]])
    # DeepDream's own objective reads only its layer: stop each forward there (the head never
    # runs, so any image size works even with a fixed-size classifier on top)
    with (
        inference_context(model.module),
        capture(model.module, objective.layers, stop=layer is not None) as cap,
    ):
        for size in sizes:
            base = _resize(pixels, size)
            dream = (base + _resize(detail, size)).clamp(0, 1)
            before.append(_value(model, objective, cap, dream, tile))
            for _ in range(steps):
                dy, dx = (
                    torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
                    if jitter
                    else (0, 0)
                )
                rolled = torch.roll(dream, shifts=(dy, dx), dims=(2, 3))
                grad = torch.roll(
                    _gradient(model, objective, cap, rolled, tile), shifts=(-dy, -dx), dims=(2, 3)
                )
                dream = (dream + lr * grad / (grad.abs().mean() + 1e-12)).clamp(0, 1)
                done += 1
                if progress is not None:
                    progress(done, total)
            after.append(_value(model, objective, cap, dream, tile))
            detail = dream - base
    params = {
        "layer": layer,
        "objective": objective.description,
        "octaves": octaves,
        "octave_scale": octave_scale,
        "steps": steps,
        "lr": lr,
        "jitter": jitter,
        "tile": tile,
        "seconds": round(time.perf_counter() - started, 3),
    }
    tensors = {
        "image": dream.detach(),
        "objective_before": torch.tensor(before),
        "objective_after": torch.tensor(after),
    }
    return Result(
        "dream",
        tensors,
        make_provenance(model, "deep_dream", params=params, layer=layer, seed=seed),
        originals=[dream[0].detach().cpu()],
    )


def _as_batch(model: Model, image: torch.Tensor) -> torch.Tensor:
    if (
        not isinstance(image, torch.Tensor)
        or image.dim() not in (3, 4)
        or (image.dim() == 4 and image.shape[0] != 1)
    ):
        raise BadInputError("image: expected one image (C, H, W) or (1, C, H, W) in [0, 1]")
    pixels = image if image.dim() == 4 else image[None]
    if pixels.shape[1] != model.channels:
        pixels = model.preprocessing.match_channels(pixels[0])[None]
    if not torch.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
        raise BadInputError("image: pixel values must be finite and in [0, 1]")
    if min(pixels.shape[-2:]) < 8:
        raise BadInputError(f"image of {tuple(pixels.shape[-2:])} pixels is too small to dream on")
    return pixels.to(model.device, model.dtype).detach()


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def _tiles(h: int, w: int, tile: int) -> list[tuple[slice, slice]]:
    ys = [slice(y, min(h, y + tile)) for y in range(0, h, tile)]
    xs = [slice(x, min(w, x + tile)) for x in range(0, w, tile)]
    return [(sy, sx) for sy in ys for sx in xs]


def _objective_on(
    model: Model, objective: Objective, cap: object, pixels: torch.Tensor
) -> torch.Tensor:
    cap.clear()  # type: ignore[attr-defined]
    logits = forward_until_captured(
        model.module, model.normalize(pixels)
    )  # None when stopped at the layer
    acts = {name: cap[name] for name in objective.layers}  # type: ignore[index]
    return objective(ObjectiveContext(pixels, pixels, logits, acts)).sum()


def _gradient(
    model: Model, objective: Objective, cap: object, pixels: torch.Tensor, tile: int
) -> torch.Tensor:
    grad = torch.zeros_like(pixels)
    for sy, sx in _tiles(pixels.shape[2], pixels.shape[3], tile):
        part = pixels[:, :, sy, sx].detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(_objective_on(model, objective, cap, part), part)
        grad[:, :, sy, sx] = g
    return grad


def _value(
    model: Model, objective: Objective, cap: object, pixels: torch.Tensor, tile: int
) -> float:
    with torch.no_grad():
        values = [
            float(_objective_on(model, objective, cap, pixels[:, :, sy, sx]))
            for sy, sx in _tiles(pixels.shape[2], pixels.shape[3], tile)
        ]
    return sum(values) / len(values)
