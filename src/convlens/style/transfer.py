"""Neural style transfer and texture synthesis by image optimisation.

Style transfer (Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural
Networks", CVPR 2016; arXiv:1508.06576): find the image ``x`` that minimises

    alpha * L_content(x, c) + beta * L_style(x, s_1..s_K) + lambda_TV * TV(x)

with ``L_content`` on features and ``L_style`` on Gram matrices over several layers
(:mod:`convlens.style.losses`). Several styles mix by a weighted average of their Gram
matrices; ``style_scale`` resizes the style images relative to the content (the paper's
Fig. 7: the scale of the style's strokes). ``preserve_color`` keeps the content's colours
and takes only the luminance from the result (Gatys et al., "Preserving Color in Neural
Artistic Style Transfer", 2016, arXiv:1606.05897).

Texture synthesis (Gatys, Ecker & Bethge, "Texture Synthesis Using Convolutional Neural
Networks", NeurIPS 2015, arXiv:1505.07376) is the same with the style term alone, from
noise, at any output size: the Gram matrices discard where things are, so the texture can
be larger than the sample.

Both run on the optimisation engine (:func:`convlens.optimize.optimize`), with the
forward pass stopped at the deepest layer used, so they work at any image size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from convlens.data.images import load_image
from convlens.data.samples import load_sample
from convlens.errors import BadInputError
from convlens.optimize.engine import evaluate_objective, optimize
from convlens.optimize.objectives import total_variation
from convlens.optimize.param import FourierParam, PixelParam
from convlens.optimize.transforms import jitter as shift
from convlens.progress import ProgressFn
from convlens.results import Result, make_provenance
from convlens.style.losses import (
    content_loss,
    default_layers,
    layer_codes,
    style_loss,
    style_targets,
)
from convlens.types import ModelProtocol

__all__ = ["load_style_image", "preserve_colors", "style_transfer", "synthesize_texture"]

#: defaults, measured in docs/features/style.md
DEFAULT_STEPS = 200
DEFAULT_SIZE = 384
DEFAULT_ALPHA = 1.0
DEFAULT_BETA = 3.0
DEFAULT_LR = 0.05
DEFAULT_JITTER = 4
DEFAULT_TV = 1e-4


def load_style_image(
    source: Any, size: int | None = None, model: ModelProtocol | None = None
) -> torch.Tensor:
    """An image (path, ``sample:NAME``, array, PIL, tensor) as pixels ``(1, C, H, W)``.

    With ``size``, resized (bilinear, antialiased) so that its longer side is ``size``.
    With ``model``, converted to the model's channel count (a grayscale model gets the
    luma); otherwise RGB.
    """
    if isinstance(source, str) and source.startswith("sample:"):
        source = load_sample(source.split(":", 1)[1])
    image = load_image(source)
    if model is not None:
        image = model.preprocessing.match_channels(image)
    image = image[None]
    if size is not None:
        image = resize_longer_side(image, size)
    return image


def resize_longer_side(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(B, C, H, W)`` so that ``max(H, W) == size``, keeping the aspect ratio."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise BadInputError(f"size must be a whole number of pixels >= 16, got {size!r}")
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    new = (max(1, round(h * scale)), max(1, round(w * scale)))
    if new == (h, w):
        return image
    return F.interpolate(
        image, size=new, mode="bilinear", align_corners=False, antialias=True
    ).clamp(0, 1)


# RGB -> YIQ (NTSC); Y is the luminance
_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)


def preserve_colors(result: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The luminance (Y of YIQ) of ``result`` with the chrominance (I, Q) of ``content``."""
    m = _YIQ.to(result)
    yiq_r = torch.einsum("ij,bjhw->bihw", m, result)
    yiq_c = torch.einsum("ij,bjhw->bihw", m, content)
    mixed = torch.cat([yiq_r[:, :1], yiq_c[:, 1:]], dim=1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(m), mixed).clamp(0, 1)


def _check_weight(name: str, value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise BadInputError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def _style_layers(
    model: ModelProtocol, style_layers: Sequence[str] | Mapping[str, float] | None
) -> dict[str, float]:
    if style_layers is None:
        return dict(default_layers(model).style)
    if isinstance(style_layers, Mapping):
        return {str(k): float(v) for k, v in style_layers.items()}
    return dict.fromkeys(style_layers, 1.0)


def style_transfer(
    model: ModelProtocol,
    content: Any,
    styles: Any | Sequence[Any],
    *,
    style_weights: Sequence[float] | None = None,
    style_scale: float = 1.0,
    content_layers: Sequence[str] | None = None,
    style_layers: Sequence[str] | Mapping[str, float] | None = None,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    tv_weight: float = DEFAULT_TV,
    transform: str | None = None,
    statistic: str | None = None,
    optimizer: str = "adam",
    init: str = "content",
    size: int | None = DEFAULT_SIZE,
    steps: int = DEFAULT_STEPS,
    lr: float | None = None,
    jitter: int | None = None,
    preserve_color: bool = False,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> Result:
    """Render ``content`` in the style of ``styles`` (Gatys et al. 2016).

    Parameters
    ----------
    model
        A convlens ``Model`` whose features define the losses.
    content, styles
        Images (paths, ``"sample:NAME"``, arrays, PIL images or tensors); one style or a list.
    style_weights
        One weight per style (normalised to sum to one): the Gram matrices are mixed by it.
    style_scale
        The style images are resized to ``style_scale`` times the content's longer side.
    content_layers, style_layers
        Dotted layer names (style: a list, or a mapping to per-layer weights); None takes
        :func:`~convlens.style.losses.default_layers` of the model.
    alpha, beta, tv_weight
        Weights of the content, style and total-variation terms.
    transform, statistic
        Activation transform before the statistics and ``"gram"`` / ``"mean_variance"``;
        None takes the model's default.
    optimizer
        ``"adam"`` (default; with ``jitter``, its results carry over to other networks
        best) or ``"lbfgs"`` (the paper's; deterministic, so ``jitter=0`` and ``lr=None``).
    init
        ``"content"`` (start from the content image) or ``"noise"``.
    size
        The content's longer side in pixels (None: as it is).
    steps, lr
        Optimiser steps and learning rate (None: 0.05 for Adam, the engine's line-search
        default for L-BFGS).
    jitter
        With Adam, shift the image by up to this many pixels (seeded) before each step, so
        the result does not rely on pixel-exact patterns only this network reads (None: 4
        for Adam, 0 for L-BFGS).
    preserve_color
        Keep the content's colours (luminance-only transfer).
    seed
        Seeds the noise start and the jitter.
    progress
        ``progress(done, total)`` after each step.

    Returns
    -------
    Result
        Kind ``"style_transfer"``: ``image (1, 3, H, W)``, ``content``, ``history`` (the
        objective per step), ``content_loss``, ``style_loss`` (of the final image).
    """
    started = time.perf_counter()
    if init not in ("content", "noise"):
        raise BadInputError(f"init={init!r}: choose content or noise")
    optimizer, lr, transforms = _optimizer_settings(optimizer, lr, jitter)
    alpha, beta, tv_weight = (
        _check_weight("alpha", alpha),
        _check_weight("beta", beta),
        _check_weight("tv_weight", tv_weight),
    )
    if (
        isinstance(style_scale, bool)
        or not isinstance(style_scale, (int, float))
        or not 0.05 <= style_scale <= 8
    ):
        raise BadInputError(f"style_scale must be a number in [0.05, 8], got {style_scale!r}")
    style_list = list(styles) if isinstance(styles, (list, tuple)) else [styles]
    defaults = default_layers(model)
    content_layers = tuple(content_layers) if content_layers is not None else defaults.content
    layers = _style_layers(model, style_layers)
    transform = defaults.transform if transform is None else transform
    statistic = defaults.statistic if statistic is None else statistic

    content_pixels = load_style_image(content, size, model).to(model.device, model.dtype)
    style_side = max(16, round(max(content_pixels.shape[-2:]) * style_scale))
    style_pixels = [
        load_style_image(s, style_side, model).to(model.device, model.dtype) for s in style_list
    ]

    targets = style_targets(
        model,
        style_pixels,
        list(layers),
        weights=style_weights,
        transform=transform,
        statistic=statistic,
    )
    codes = layer_codes(model, content_pixels, content_layers)
    c_loss, s_loss = (
        content_loss(codes),
        style_loss(targets, layers, transform=transform, statistic=statistic),
    )
    objective = -(alpha * c_loss) - beta * s_loss
    if tv_weight:
        objective = objective - tv_weight * total_variation(2.0)

    gen = torch.Generator().manual_seed(seed)
    if init == "content":
        param = PixelParam.from_image(content_pixels)
    else:
        param = PixelParam(
            content_pixels.shape, gen, init_std=1.0, device=model.device, dtype=model.dtype
        )
    run = optimize(
        model,
        objective,
        param,
        steps=steps,
        lr=lr,
        optimizer=optimizer,
        transforms=transforms,
        generator=gen,
        progress=progress,
        truncate=True,
    )
    image = run.tensors["image"]
    if preserve_color and image.shape[1] == 3:  # a grayscale result has no colour to keep
        image = preserve_colors(image, content_pixels)
    final_c, final_s = _final_losses(model, image, c_loss, s_loss)
    params = {
        "styles": len(style_list),
        "style_weights": list(style_weights) if style_weights is not None else None,
        "style_scale": style_scale,
        "content_layers": list(content_layers),
        "style_layers": layers,
        "alpha": alpha,
        "beta": beta,
        "tv_weight": tv_weight,
        "transform": transform,
        "statistic": statistic,
        "optimizer": optimizer,
        "init": init,
        "size": list(image.shape[-2:]),
        "steps": steps,
        "jitter": jitter,
        "preserve_color": preserve_color,
        "seconds": round(time.perf_counter() - started, 3),
    }
    tensors = {
        "image": image.detach().cpu(),
        "content": content_pixels.cpu(),
        "history": run.tensors["history"],
        "content_loss": final_c,
        "style_loss": final_s,
    }
    return Result(
        "style_transfer",
        tensors,
        make_provenance(model, "style_transfer", params=params, seed=seed),
        originals=[image[0].detach().cpu()],
    )


def synthesize_texture(
    model: ModelProtocol,
    sample: Any,
    *,
    size: int | Sequence[int] = 384,
    sample_size: int | None = 256,
    style_layers: Sequence[str] | Mapping[str, float] | None = None,
    transform: str | None = None,
    statistic: str | None = None,
    param: str = "fourier",
    optimizer: str = "adam",
    steps: int = DEFAULT_STEPS,
    lr: float | None = None,
    jitter: int | None = None,
    tv_weight: float = 0.0,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> Result:
    """A new texture from the Gram matrices of ``sample`` alone (Gatys et al. 2015).

    ``size`` is the output's side (or ``(H, W)``), independent of the sample's, so the
    texture can be larger than the sample; the sample is used at ``sample_size`` (longer
    side; None: as it is). The start is noise drawn from ``seed``. ``param`` is
    ``"fourier"`` (default: decorrelated colour with a ``1/f`` spectrum, Olah et al. 2017,
    which keeps the speckle of free pixels out) or ``"pixel"``; ``optimizer``, ``lr`` and
    ``jitter`` as in :func:`style_transfer`. Returns kind ``"texture"``: ``image``,
    ``start`` (the noise it began from), ``sample``, ``history``, ``style_loss``.
    """
    started = time.perf_counter()
    tv_weight = _check_weight("tv_weight", tv_weight)
    hw = (size, size) if isinstance(size, int) and not isinstance(size, bool) else tuple(size)  # type: ignore[arg-type]
    if len(hw) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 16 for v in hw):
        raise BadInputError(f"size must be a whole number of pixels >= 16 or (H, W), got {size!r}")
    optimizer, lr, transforms = _optimizer_settings(optimizer, lr, jitter)
    defaults = default_layers(model)
    layers = _style_layers(model, style_layers)
    transform = defaults.transform if transform is None else transform
    statistic = defaults.statistic if statistic is None else statistic
    sample_pixels = load_style_image(sample, sample_size, model).to(model.device, model.dtype)
    targets = style_targets(
        model, [sample_pixels], list(layers), transform=transform, statistic=statistic
    )
    s_loss = style_loss(targets, layers, transform=transform, statistic=statistic)
    objective = -s_loss
    if tv_weight:
        objective = objective - tv_weight * total_variation(2.0)
    gen = torch.Generator().manual_seed(seed)
    shape = (1, model.channels, *hw)
    if param == "pixel":
        image_param: PixelParam | FourierParam = PixelParam(
            shape, gen, init_std=1.0, device=model.device, dtype=model.dtype
        )
    elif param == "fourier":
        image_param = FourierParam(shape, gen, device=model.device, dtype=model.dtype)
    else:
        raise BadInputError(f"param={param!r}: choose pixel or fourier")
    with torch.no_grad():
        start = image_param().detach().cpu()
    run = optimize(
        model,
        objective,
        image_param,
        steps=steps,
        lr=lr,
        optimizer=optimizer,
        transforms=transforms,
        generator=gen,
        progress=progress,
        truncate=True,
    )
    image = run.tensors["image"]
    final_s = _final_losses(model, image, None, s_loss)[1]
    params = {
        "size": list(hw),
        "sample_size": list(sample_pixels.shape[-2:]),
        "style_layers": layers,
        "transform": transform,
        "statistic": statistic,
        "param": param,
        "optimizer": optimizer,
        "lr": lr,
        "steps": steps,
        "jitter": jitter,
        "tv_weight": tv_weight,
        "seconds": round(time.perf_counter() - started, 3),
    }
    tensors = {
        "image": image.detach().cpu(),
        "start": start,
        "sample": sample_pixels.cpu(),
        "history": run.tensors["history"],
        "style_loss": final_s,
    }
    return Result(
        "texture",
        tensors,
        make_provenance(model, "texture", params=params, seed=seed),
        originals=[image[0].detach().cpu()],
    )


def _optimizer_settings(
    optimizer: str, lr: float | None, jitter: int | None
) -> tuple[str, float | None, list[Any]]:
    """Check the optimiser; fill in the defaults of ``lr`` and ``jitter``; the transforms."""
    if optimizer not in ("lbfgs", "adam"):
        raise BadInputError(f"optimizer={optimizer!r}: choose adam or lbfgs")
    if jitter is None:
        jitter = DEFAULT_JITTER if optimizer == "adam" else 0
    if lr is None and optimizer == "adam":
        lr = DEFAULT_LR
    if isinstance(jitter, bool) or not isinstance(jitter, int) or jitter < 0:
        raise BadInputError(f"jitter must be a whole number of pixels >= 0, got {jitter!r}")
    if jitter and optimizer == "lbfgs":
        raise BadInputError(
            "jitter needs optimizer='adam' (L-BFGS needs a deterministic objective)"
        )
    return optimizer, lr, [shift(jitter)] if jitter else []


def _final_losses(
    model: ModelProtocol, image: torch.Tensor, c_loss: Any, s_loss: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """The content and style penalties of the final image (content 0 without a content term)."""
    with torch.no_grad():
        c = (
            evaluate_objective(model, c_loss, image, truncate=True).cpu()
            if c_loss is not None
            else torch.zeros(image.shape[0])
        )
        s = evaluate_objective(model, s_loss, image, truncate=True).cpu()
    return c, s
