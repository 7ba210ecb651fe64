"""Feature inversion: what does a layer's code still know about the photo?

Mahendran & Vedaldi, "Understanding Deep Image Representations by Inverting Them", CVPR
2015, arXiv:1412.0035. Find the image whose activations at layer ``l`` match the photo's,
with a total-variation prior that keeps it natural:

    x* = argmax_x  - ||A_l(x) - A_l(x0)||^2 / ||A_l(x0)||^2  -  lambda_TV * TV_beta(x)

(:func:`~convlens.optimize.objectives.feature_distance` minus
:func:`~convlens.optimize.objectives.total_variation`), ascended by the engine from a random
start. Early layers keep nearly everything (the reconstruction is the photo, PSNR > 20 dB);
deep layers keep what the class needs and little of where or what colour.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch

from convlens.errors import BadInputError
from convlens.hooks import capture, inference_context
from convlens.layers import resolve_layer
from convlens.models.model import Model
from convlens.optimize.engine import optimize
from convlens.optimize.objectives import feature_distance, total_variation
from convlens.optimize.transforms import jitter as shift
from convlens.progress import ProgressFn
from convlens.results import Result, make_provenance

__all__ = ["invert", "invert_layers", "psnr"]


#: layers whose output stride (input pixels per code cell) is at most this are "shallow"
SHALLOW_STRIDE = 4


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of pixel-space images in [0, 1], per image."""
    mse = (a - b).flatten(1).pow(2).mean(dim=1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def invert(
    model: Model,
    pixels: torch.Tensor,
    layer: str,
    *,
    steps: int = 200,
    lr: float = 0.1,
    tv_weight: float | None = None,
    tv_power: float = 2.0,
    param: str | None = None,
    jitter: int | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> Result:
    """Reconstruct ``pixels`` from the output of ``layer``.

    Parameters
    ----------
    model
        The network.
    pixels
        The photo in pixel space at the model's input size, ``(C, H, W)`` or ``(B, C, H, W)``
        (``model.denormalize(model.prepare(photo).x)``).
    layer
        Dotted layer name whose code is inverted.
    steps, lr
        Adam steps and learning rate of the engine.
    tv_weight, tv_power
        Weight ``lambda_TV`` and exponent ``beta`` of the total-variation prior (``beta = 2``
        smooth, ``1`` edge-preserving).
    param
        ``"pixel"`` or ``"fourier"``.
    jitter
        Random shift of up to this many pixels before the model sees the image, each step
        (Mahendran & Vedaldi's 2016 "natural pre-images" jitter): without it, deep codes are
        matched by high-frequency patterns that only this network reads.
    tv_weight, param, jitter
        ``None`` picks by the layer's stride (from the layer table): up to stride 4, where
        the code still pins down every pixel, ``0.01``, ``"pixel"`` and no jitter; deeper,
        ``0.2``, ``"fourier"`` and 8 pixels.
    seed
        Seeds the random start.
    progress
        ``progress(done, total)`` after each step.

    Returns
    -------
    Result
        Kind ``"inversion"``: ``image`` ``(B, C, H, W)``, ``original``, ``psnr`` ``(B,)`` in
        dB, ``relative_error`` ``(B,)``: ``||A(x*) - A(x0)|| / ||A(x0)||``.
    """
    resolve_layer(model.module, layer)
    x0 = _as_batch(model, pixels)
    shallow = _stride(model, layer) <= SHALLOW_STRIDE
    tv_weight = (0.01 if shallow else 0.2) if tv_weight is None else tv_weight
    param = ("pixel" if shallow else "fourier") if param is None else param
    jitter = (0 if shallow else 8) if jitter is None else jitter
    if not isinstance(jitter, int) or isinstance(jitter, bool) or jitter < 0:
        raise BadInputError(f"jitter must be a whole number of pixels >= 0, got {jitter!r}")
    if not (isinstance(tv_weight, (int, float)) and tv_weight >= 0 and math.isfinite(tv_weight)):
        raise BadInputError(f"tv_weight must be a number >= 0, got {tv_weight!r}")
    started = time.perf_counter()
    code = _code(model, x0, layer)
    objective = feature_distance(layer, code)
    if tv_weight:
        objective = objective - tv_weight * total_variation(tv_power)
    transforms = [shift(jitter)] if jitter else []
    run = optimize(
        model,
        objective,
        param,
        steps=steps,
        lr=lr,
        transforms=transforms,
        generator=seed,
        progress=progress,
        batch=x0.shape[0],
    )
    image = run.tensors["image"].to(x0.device)
    error = (_code(model, image, layer) - code).flatten(1).norm(dim=1) / code.flatten(1).norm(dim=1)
    params = {
        "layer": layer,
        "steps": steps,
        "lr": lr,
        "tv_weight": tv_weight,
        "tv_power": tv_power,
        "param": param,
        "jitter": jitter,
        "objective": objective.description,
        "seconds": round(time.perf_counter() - started, 3),
    }
    tensors = {
        "image": image,
        "original": x0,
        "psnr": psnr(image, x0).cpu(),
        "relative_error": error.cpu(),
        "history": run.tensors["history"],
    }
    return Result(
        "inversion",
        tensors,
        make_provenance(model, "invert", params=params, layer=layer, seed=seed),
        originals=[i.cpu() for i in image],
    )


def invert_layers(
    model: Model,
    pixels: torch.Tensor,
    layers: Sequence[str],
    *,
    progress: ProgressFn | None = None,
    **options: object,
) -> list[Result]:
    """:func:`invert` at each of ``layers`` (shallow to deep: the strip of the paper's Fig. 6)."""
    for layer in layers:
        resolve_layer(model.module, layer)  # every name checked before the first long run
    results = []
    steps = int(options.get("steps", 200))  # type: ignore[call-overload]
    for k, layer in enumerate(layers):

        def step(done: int, _total: int, k: int = k) -> None:
            if progress is not None:
                progress(k * steps + done, len(layers) * steps)

        results.append(invert(model, pixels, layer, progress=step, **options))  # type: ignore[arg-type]
    return results


def _as_batch(model: Model, pixels: torch.Tensor) -> torch.Tensor:
    if not isinstance(pixels, torch.Tensor) or pixels.dim() not in (3, 4):
        raise BadInputError("pixels: expected (C, H, W) or (B, C, H, W) in [0, 1]")
    x = (pixels if pixels.dim() == 4 else pixels[None]).to(model.device, model.dtype).detach()
    if tuple(x.shape[1:]) != (model.channels, *model.input_size):
        raise BadInputError(
            f"pixels of shape {tuple(x.shape[1:])}: expected the model's input {(model.channels, *model.input_size)}"
        )
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise BadInputError("pixels must be finite and in [0, 1]")
    return x


def _stride(model: Model, layer: str) -> float:
    field = model.layer_info(layer).receptive_field
    return max(field.stride) if field is not None and not field.is_global else float("inf")


def _code(model: Model, pixels: torch.Tensor, layer: str) -> torch.Tensor:
    with inference_context(model.module), torch.no_grad(), capture(model.module, [layer]) as acts:
        model.module(model.normalize(pixels))
        return acts[layer].detach()
