"""Deletion and insertion: how fast the class probability falls (rises) along a map.

Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
Models", BMVC 2018, arXiv:1806.07421. Pixels are ranked by the map, most important first.
*Deletion* replaces them, in that order, by a fill (the pixels of a blurred copy, black, or
the mean colour) starting from the clean image; *insertion* puts them back into the fill
(by default a blurred copy). After each of ``steps`` equal steps the softmax probability of
the target class is recorded. The area under that curve over the fraction of pixels
changed, in ``[0, 1]`` by the trapezoid rule, is the score: a faithful map has a *low*
deletion AUC (the probability collapses early) and a *high* insertion AUC.

All the step images of a batch are evaluated in forward passes of up to ``batch_size``
images; nothing is differentiated.
"""

from __future__ import annotations

import torch

from convlens.blur import gaussian_blur, gaussian_radius
from convlens.errors import BadInputError, TargetError
from convlens.models.model import Model
from convlens.progress import ProgressFn
from convlens.targets import TargetLike, resolve_target

__all__ = ["deletion_auc", "fill_image", "insertion_auc", "pixel_ranks"]


FILLS = ("blur", "zero", "mean")


def deletion_auc(
    model: Model,
    x: torch.Tensor,
    maps: torch.Tensor,
    target: TargetLike = None,
    *,
    steps: int = 50,
    fill: str | torch.Tensor = "blur",
    blur_sigma: float | None = None,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deletion AUC: remove the most important pixels first; lower is more faithful.

    Petsiuk, Das & Saenko 2018, arXiv:1806.07421. After step ``k`` the
    ``round(k * H * W / steps)`` highest-ranked pixels (all channels) show the fill instead
    of the image; the curve is the target's softmax probability at ``k = 0 .. steps``
    (the clean image first, the fully filled image last) and the AUC its trapezoid
    integral over the fraction of pixels removed.

    Parameters
    ----------
    model
        The classifier (a :class:`~convlens.models.model.Model`); run in eval mode.
    x
        Input-space batch ``(N, C, H, W)`` (``model.prepare(...).x``).
    maps
        Importance maps over the model input, ``(N, H, W)`` or ``(N, 1, H, W)``
        (``explain(...).tensors["map"]``). Higher = more important; ties are broken by
        raster order (row by row, left to right), so the order is deterministic.
    target
        Class target (index, list, tensor, label); None = the predicted class on ``x``.
        Neuron and callable targets have no class probability and are refused.
    steps
        Number of equal steps; the curve has ``steps + 1`` points.
    fill
        What removed pixels become: ``"blur"`` (the same pixels of a Gaussian-blurred
        copy), ``"zero"`` (black in pixel space, i.e. ``model.normalize(0)``), ``"mean"``
        (the image's mean colour), or an input-space tensor shaped like ``x``. RISE used
        black for deletion; blur keeps the image closer to the training distribution.
    blur_sigma
        Standard deviation of the blur in pixels; default ``max(H, W) / 32`` (7 px at 224).
    batch_size
        Images per forward pass (the ``N * (steps + 1)`` step images are chunked).
    progress
        Optional ``callback(done, total)`` in step images evaluated.

    Returns
    -------
    auc : Tensor
        ``(N,)`` areas under the deletion curves.
    curve : Tensor
        ``(N, steps + 1)`` target probabilities after each step.

    Raises
    ------
    BadInputError
        Maps that do not match ``x``, non-finite maps, an unknown fill, ``steps < 1``.
    TargetError
        A neuron or callable target.
    """
    return _auc(
        model,
        x,
        maps,
        target,
        deletion=True,
        steps=steps,
        fill=fill,
        blur_sigma=blur_sigma,
        batch_size=batch_size,
        progress=progress,
    )


def insertion_auc(
    model: Model,
    x: torch.Tensor,
    maps: torch.Tensor,
    target: TargetLike = None,
    *,
    steps: int = 50,
    fill: str | torch.Tensor = "blur",
    blur_sigma: float | None = None,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Insertion AUC: reveal the most important pixels first; higher is more faithful.

    Petsiuk, Das & Saenko 2018, arXiv:1806.07421. The mirror of :func:`deletion_auc`:
    the curve starts from the fill (by default a blurred copy of the image, as in RISE)
    and after step ``k`` the ``round(k * H * W / steps)`` highest-ranked pixels show the
    clean image; the last point is the clean image's probability. Parameters, returns
    and errors as in :func:`deletion_auc`.
    """
    return _auc(
        model,
        x,
        maps,
        target,
        deletion=False,
        steps=steps,
        fill=fill,
        blur_sigma=blur_sigma,
        batch_size=batch_size,
        progress=progress,
    )


def pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """Rank of every pixel by its map value, ``0`` = most important: ``(N, H, W) -> (N, H*W)``.

    Ties keep raster order (a stable sort), so a constant map removes pixels row by row.
    """
    flat = maps.reshape(maps.shape[0], -1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return ranks.scatter_(1, order, positions)


def fill_image(
    model: Model, x: torch.Tensor, fill: str | torch.Tensor, blur_sigma: float | None = None
) -> torch.Tensor:
    """The input-space image that removed pixels are replaced by (see :func:`deletion_auc`)."""
    if isinstance(fill, torch.Tensor):
        if fill.shape != x.shape:
            raise BadInputError(
                f"fill tensor has shape {tuple(fill.shape)} but x has {tuple(x.shape)}; pass an input-space tensor shaped like x or one of {', '.join(FILLS)}"
            )
        return fill.to(x.device, x.dtype)
    if fill == "zero":
        black = torch.zeros(1, x.shape[1], 1, 1, device=x.device, dtype=x.dtype)
        return model.normalize(black).expand_as(x)
    if fill == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    if fill == "blur":
        sigma = blur_sigma if blur_sigma is not None else max(x.shape[-2:]) / 32
        if not sigma > 0:
            raise BadInputError(f"blur_sigma={blur_sigma!r}: pass a positive number of pixels")
        # radius ceil(3 sigma), mirrored edges
        return gaussian_blur(
            x, sigma, radius=gaussian_radius(sigma, 3.0, round_up=True), border="reflect"
        )
    raise BadInputError(
        f"fill={fill!r}: choose {', '.join(FILLS)} or an input-space tensor shaped like x"
    )


def _auc(
    model: Model,
    x: torch.Tensor,
    maps: torch.Tensor,
    target: TargetLike,
    *,
    deletion: bool,
    steps: int,
    fill: str | torch.Tensor,
    blur_sigma: float | None,
    batch_size: int,
    progress: ProgressFn | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach()
    maps = _check_maps(maps, x)
    if not isinstance(steps, int) or steps < 1:
        raise BadInputError(
            f"steps={steps!r}: pass a positive int (the curve has steps + 1 points)"
        )
    if batch_size < 1:
        raise BadInputError(f"batch_size={batch_size!r}: pass a positive int")
    classes = _target_classes(model, x, target, batch_size)
    background = fill_image(model, x, fill, blur_sigma).detach()
    start, end = (x, background) if deletion else (background, x)
    n, _, h, w = x.shape
    total = h * w
    ranks = pixel_ranks(maps).reshape(n, h, w)
    counts = (
        torch.round(torch.arange(steps + 1, dtype=torch.float64) * total / steps)
        .long()
        .to(x.device)
    )
    fractions = counts.to(torch.float64) / total
    items = n * (steps + 1)
    probs = torch.empty(items, device=x.device, dtype=torch.float64)
    for lo in range(0, items, batch_size):
        idx = torch.arange(lo, min(lo + batch_size, items), device=x.device)
        image, step = idx // (steps + 1), idx % (steps + 1)
        changed = (ranks[image] < counts[step].view(-1, 1, 1)).unsqueeze(1)
        batch = torch.where(changed, end[image], start[image])
        logits = model.logits(batch, batch_size=batch_size)
        if lo == 0 and int(classes.max()) >= logits.shape[1]:
            raise TargetError(
                f"class index {int(classes.max())} is out of range: the model has {logits.shape[1]} outputs"
            )
        probs[lo : lo + len(idx)] = (
            logits.double().softmax(dim=1).gather(1, classes[image].view(-1, 1)).squeeze(1)
        )
        if progress is not None:
            progress(min(lo + batch_size, items), items)
    curve = probs.view(n, steps + 1)
    auc = torch.trapezoid(curve, fractions.to(curve.device), dim=1)
    return auc.to(x.dtype), curve.to(x.dtype)


def _check_maps(maps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor):
        raise BadInputError(
            f"maps must be a tensor (N, H, W), not {type(maps).__name__}; pass explain(...).tensors['map']"
        )
    if x.dim() != 4:
        raise BadInputError(
            f"x must be an input-space batch (N, C, H, W); got shape {tuple(x.shape)}"
        )
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3 or maps.shape[0] != x.shape[0] or maps.shape[-2:] != x.shape[-2:]:
        hint = "pass one (H, W) map per image at the input size, e.g. explain(...).tensors['map']"
        raise BadInputError(
            f"maps have shape {tuple(maps.shape)} but x is {tuple(x.shape)}; {hint}"
        )
    maps = maps.detach().to(x.device)
    if not torch.isfinite(maps).all():
        raise BadInputError(
            "maps contain NaN or infinite values; an importance order needs finite numbers"
        )
    return maps.float() if maps.dtype in (torch.float16, torch.bfloat16) else maps


def _target_classes(
    model: Model, x: torch.Tensor, target: TargetLike, batch_size: int
) -> torch.Tensor:
    resolved = resolve_target(model, target, x.shape[0])
    if resolved.kind == "predicted":
        return model.logits(x, batch_size=batch_size).argmax(dim=1)
    if resolved.kind != "class" or resolved.classes is None:
        raise TargetError(
            f"deletion and insertion need a class target (a probability); got a {resolved.kind} target"
        )
    return resolved.classes.to(x.device).expand(x.shape[0]).clone()
