"""The optimisation engine: ascend an objective by changing an image.

:func:`optimize` is the one driver every image-synthesis feature uses (class and neuron
visualisation, DeepDream, inversion, fooling, style). Each step it renders the
parameterised image (pixel space), applies random transforms, feeds
``model.normalize(transformed)`` to the network with the objective's layers captured, and
takes an optimiser step on ``-objective(ctx).sum()`` (objectives are maximised). The model
runs in eval mode with frozen parameters (:func:`convlens.hooks.inference_context`): its
weights never change and never receive gradients; every hook is gone when it returns,
also after an exception.

Extend it by writing an :class:`~convlens.optimize.objectives.Objective`, an
:class:`~convlens.optimize.param.ImageParam` or a
:class:`~convlens.optimize.transforms.Transform`, not by editing the driver.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from convlens.errors import BadInputError, ConvlensError
from convlens.hooks import capture, forward_until_captured, inference_context
from convlens.layers import resolve_layer
from convlens.optimize.objectives import Objective, ObjectiveContext, as_objective
from convlens.optimize.param import FourierParam, ImageParam, PixelParam
from convlens.optimize.transforms import (
    Transform,
    clip_small_gradients,
    clip_small_pixels,
    compose,
    gaussian_blur,
    standard_transforms,
)
from convlens.progress import ProgressFn
from convlens.results import Result, make_provenance
from convlens.types import ModelProtocol

__all__ = ["DEFAULT_DECAY_POWER", "OPTIMIZERS", "evaluate_objective", "make_param", "optimize"]

#: optimiser names :func:`optimize` accepts
OPTIMIZERS = ("adam", "sgd", "lbfgs")
#: spectrum exponent of the default Fourier parameterisation (see :func:`make_param`)
DEFAULT_DECAY_POWER = 1.25

TransformsLike = Transform | Sequence[Transform] | bool | None


def _generator(generator: torch.Generator | int | None) -> tuple[torch.Generator, int]:
    if isinstance(generator, torch.Generator):
        return generator, generator.initial_seed()
    if generator is None:
        generator = 0
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise BadInputError(
            f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}"
        )
    return torch.Generator().manual_seed(generator), generator


def _image_size(model: ModelProtocol, image_size: int | Sequence[int] | None) -> tuple[int, int]:
    if image_size is None:
        h, w = model.input_size
        return int(h), int(w)
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size
    ):
        raise BadInputError(f"image_size must be a positive int or (H, W), got {image_size!r}")
    return size[0], size[1]


def make_param(
    kind: str,
    model: ModelProtocol,
    *,
    batch: int = 1,
    image_size: int | Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    decay_power: float = DEFAULT_DECAY_POWER,
) -> ImageParam:
    """A fresh ``"fourier"`` or ``"pixel"`` parameterisation for ``model`` (its channels,
    device and dtype; its input size unless ``image_size`` is given).

    The Fourier one uses ``decay_power`` :data:`DEFAULT_DECAY_POWER` (1.25), a little
    steeper than the ``1/f`` of :class:`~convlens.optimize.param.FourierParam`'s own default:
    on EfficientNet-Lite0 it gives more contrast and colour, and less fine noise, within
    about a hundred steps, with the same success rate.
    """
    h, w = _image_size(model, image_size)
    shape = (batch, model.channels, h, w)
    if kind == "fourier":
        return FourierParam(
            shape, generator, decay_power=decay_power, device=model.device, dtype=model.dtype
        )
    if kind == "pixel":
        return PixelParam(shape, generator, device=model.device, dtype=model.dtype)
    raise BadInputError(
        f"param={kind!r}: choose 'fourier' or 'pixel', or pass a FourierParam/PixelParam"
    )


def _transforms(
    transforms: TransformsLike, optimizer: str, size: tuple[int, int]
) -> Transform | None:
    if transforms is None:
        return None if optimizer == "lbfgs" else standard_transforms(min(size))
    if transforms is False or (isinstance(transforms, Sequence) and len(transforms) == 0):
        return None
    if isinstance(transforms, Transform):
        return transforms
    if isinstance(transforms, Sequence):
        return compose(list(transforms))
    raise BadInputError(
        f"transforms must be a Transform, a list of them, or None/[] for none; got {type(transforms).__name__}"
    )


def _check_layers(model: ModelProtocol, objective: Objective) -> None:
    for name in objective.layers:
        resolve_layer(model.module, name)  # LayerNotFoundError with suggestions


def _forward(
    model: ModelProtocol,
    objective: Objective,
    cap: Any,
    image: torch.Tensor,
    seen: torch.Tensor,
    truncate: bool = False,
) -> torch.Tensor:
    cap.clear()
    if truncate:  # the objective reads layers only: the rest of the network is not run
        logits = forward_until_captured(model.module, model.normalize(seen))
    else:
        logits = model.module(model.normalize(seen))
    acts = {name: cap[name] for name in objective.layers}
    return objective(ObjectiveContext(image, seen, logits, acts))


def evaluate_objective(
    model: ModelProtocol, objective: Objective, pixels: torch.Tensor, *, truncate: bool = False
) -> torch.Tensor:
    """The objective's values ``(B,)`` on a pixel-space batch, seen without transforms.

    Differentiable w.r.t. ``pixels`` when they require grad (the model's parameters are
    frozen meanwhile and restored afterwards). ``truncate`` as in :func:`optimize`.
    """
    objective = as_objective(objective)
    _check_layers(model, objective)
    with (
        inference_context(model.module),
        capture(model.module, objective.layers, stop=truncate) as cap,
    ):
        values = _forward(model, objective, cap, pixels, pixels, truncate)
        cap.clear()
    return values


def _check_number(
    name: str, value: Any, *, low: float, inclusive: bool = True, integer: bool = False
) -> None:
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if (
        isinstance(value, bool)
        or not ok_type
        or not math.isfinite(value)
        or (value < low if inclusive else value <= low)
    ):
        kind = "a whole number" if integer else "a number"
        bound = f">= {low:g}" if inclusive else f"> {low:g}"
        raise BadInputError(f"{name} must be {kind} {bound}, got {value!r}")


def optimize(
    model: ModelProtocol,
    objective: Objective | Callable[[ObjectiveContext], torch.Tensor],
    param: ImageParam | str | None = None,
    *,
    steps: int = 256,
    lr: float | None = None,
    optimizer: str = "adam",
    transforms: TransformsLike = None,
    blur_every: int = 0,
    blur_sigma: float = 0.5,
    clip_pixels_percentile: float = 0.0,
    clip_pixels_every: int = 1,
    clip_grads_percentile: float = 0.0,
    snapshot_every: int = 0,
    generator: torch.Generator | int | None = None,
    progress: ProgressFn | None = None,
    batch: int = 1,
    image_size: int | Sequence[int] | None = None,
    truncate: bool = False,
) -> Result:
    """Find images that maximise ``objective``.

    Parameters
    ----------
    model
        A convlens :class:`~convlens.models.model.Model`.
    objective
        What to maximise (see :mod:`convlens.optimize.objectives`), one value per image.
    param
        The image parameterisation: an :class:`~convlens.optimize.param.ImageParam`,
        ``"fourier"`` (default: decorrelated colour, ``1/f`` spectrum) or ``"pixel"``.
    steps
        Optimiser steps (L-BFGS: iterations, each with a line search).
    lr
        Learning rate; None is 0.05 for Adam and SGD and 1.0 for L-BFGS (the first trial
        step of each line search, in units of the quasi-Newton step).
    optimizer
        ``"adam"``, ``"sgd"`` (plain gradient ascent) or ``"lbfgs"`` (strong-Wolfe line
        search; needs a deterministic objective, so no random transforms).
    transforms
        Random transforms before the model sees the image: a
        :class:`~convlens.optimize.transforms.Transform` or a list (composed). ``None`` is
        :func:`~convlens.optimize.transforms.standard_transforms` for Adam/SGD and none
        for L-BFGS; ``[]`` or ``False`` is none.
    blur_every, blur_sigma
        Every ``blur_every`` steps (0 = never), blur the image with a Gaussian of
        ``blur_sigma`` pixels (Yosinski et al. 2015).
    clip_pixels_percentile, clip_pixels_every
        Every ``clip_pixels_every`` steps, set the pixels whose norm is below this
        percentile (0 = off) to grey.
    clip_grads_percentile
        Zero the parameters' gradient where it is below this percentile (0 = off), every
        step.
    snapshot_every
        Keep the image every this many steps (0 = never), plus the initial image.
    generator
        A ``torch.Generator`` or an int seed (None is seed 0): initial image and every
        transform draw, so the same seed gives the same images.
    progress
        ``progress(done, total)`` after each step.
    batch
        Images optimised together (when ``param`` is not an ``ImageParam``).
    image_size
        ``H`` or ``(H, W)`` of the images (default the model's input size); the model must
        accept that size.
    truncate
        Stop each forward pass once the objective's layers are captured (the objective then
        sees ``logits=None``): for objectives that read only layers (style, texture,
        inversion), it skips the rest of the network, and lets models with a fixed-size head
        take images of any size.

    Returns
    -------
    Result
        ``kind="optimized"``; tensors ``optimized`` and ``image`` (the same final images,
        pixel space ``(B, C, H, W)`` in [0, 1]), ``history (steps,)`` (batch-mean objective
        at each step, as optimised, i.e. through that step's transforms), ``values (B,)``
        (the objective of each final image without transforms), and with
        ``snapshot_every`` ``snapshots (S, B, C, H, W)`` and ``snapshot_steps (S,)``.

    Raises
    ------
    BadInputError
        For invalid settings (one line naming the option), unknown layers
        (:class:`~convlens.errors.LayerNotFoundError`) before any forward pass, or L-BFGS
        with random transforms.

    Examples
    --------
    >>> from convlens.optimize import optimize, class_score, l2
    >>> result = optimize(model, class_score(130) - 1e-3 * l2(), steps=128)
    >>> result["image"].shape
    torch.Size([1, 3, 224, 224])
    """
    objective = as_objective(objective)
    _check_number("steps", steps, low=1, integer=True)
    if optimizer not in OPTIMIZERS:
        raise BadInputError(f"optimizer={optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    rate: float = (1.0 if optimizer == "lbfgs" else 0.05) if lr is None else lr
    _check_number("lr", rate, low=0, inclusive=False)
    _check_number("batch", batch, low=1, integer=True)
    _check_number("blur_every", blur_every, low=0, integer=True)
    _check_number("blur_sigma", blur_sigma, low=0, inclusive=False)
    _check_number("clip_pixels_every", clip_pixels_every, low=1, integer=True)
    _check_number("snapshot_every", snapshot_every, low=0, integer=True)
    for name, pct in (
        ("clip_pixels_percentile", clip_pixels_percentile),
        ("clip_grads_percentile", clip_grads_percentile),
    ):
        if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 <= pct < 100:
            raise BadInputError(f"{name} must be a percentile in [0, 100), got {pct!r}")
    if progress is not None and not callable(progress):
        raise BadInputError(
            f"progress must be a callable progress(done, total), got {type(progress).__name__}"
        )
    gen, seed = _generator(generator)
    _check_layers(model, objective)
    if truncate and not objective.layers:
        raise BadInputError(
            f"truncate=True needs an objective that reads layers; {objective.description} reads none"
        )

    if param is None or isinstance(param, str):
        param = make_param(
            param or "fourier", model, batch=batch, image_size=image_size, generator=gen
        )
    elif isinstance(param, ImageParam):
        if batch != 1 and batch != param.batch:
            raise BadInputError(
                f"batch={batch} but the given param holds {param.batch} images; drop batch= or make the param with {batch}"
            )
        if image_size is not None and tuple(param.shape[2:]) != _image_size(model, image_size):
            raise BadInputError(
                f"image_size={image_size!r} but the given param is {param.shape[2]}x{param.shape[3]}"
            )
    else:
        raise BadInputError(
            f"param must be 'fourier', 'pixel' or an ImageParam, got {type(param).__name__}"
        )
    if param.shape[1] != model.channels:
        raise BadInputError(
            f"the param has {param.shape[1]} channels but the model takes {model.channels}"
        )
    size = (param.shape[2], param.shape[3])
    tf = _transforms(transforms, optimizer, size)
    if optimizer == "lbfgs" and tf is not None and tf.random:
        raise BadInputError(
            "optimizer='lbfgs' needs a deterministic objective but the transforms are random; pass transforms=[] or use optimizer='adam'"
        )

    leaves = param.parameters()

    def new_optimizer() -> torch.optim.Optimizer:
        if optimizer == "adam":
            return torch.optim.Adam(leaves, lr=rate)
        if optimizer == "sgd":
            return torch.optim.SGD(leaves, lr=rate)
        # one iteration per step, and no early stop: ``steps`` alone decides how long it runs
        return torch.optim.LBFGS(
            leaves,
            lr=rate,
            max_iter=1,
            history_size=20,
            line_search_fn="strong_wolfe",
            tolerance_grad=0.0,
            tolerance_change=0.0,
        )

    opt = new_optimizer()
    history = torch.empty(steps, dtype=torch.float64)
    snapshots: list[torch.Tensor] = []
    snapshot_steps: list[int] = []
    if snapshot_every:
        with torch.no_grad():
            snapshots.append(param().detach().cpu())
        snapshot_steps.append(0)

    with (
        inference_context(model.module),
        capture(model.module, objective.layers, stop=truncate) as cap,
    ):
        try:
            first: list[torch.Tensor] = []  # the objective at the start of the current step

            def closure() -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                image = param()
                seen = tf(image, gen) if tf is not None else image
                values = _forward(model, objective, cap, image, seen, truncate)
                loss = -values.sum()
                loss.backward()
                cap.clear()
                if clip_grads_percentile:
                    for leaf in leaves:
                        if leaf.grad is not None:
                            leaf.grad = clip_small_gradients(leaf.grad, clip_grads_percentile)
                if not first:
                    first.append(values.detach())
                return loss

            for step in range(steps):
                first.clear()
                if optimizer == "lbfgs":
                    opt.step(closure)  # type: ignore[arg-type]
                else:
                    closure()
                    opt.step()
                value = first[0].double().mean().item()
                if not math.isfinite(value):
                    raise ConvlensError(
                        f"the objective became {value} at step {step + 1}; try a smaller lr (now {rate:g})"
                    )
                history[step] = value

                done = step + 1
                edited = False
                with torch.no_grad():
                    if blur_every and done % blur_every == 0:
                        param.set_image(gaussian_blur(param(), blur_sigma))
                        edited = True
                    if clip_pixels_percentile and done % clip_pixels_every == 0:
                        param.set_image(clip_small_pixels(param(), clip_pixels_percentile))
                        edited = True
                    if snapshot_every and done % snapshot_every == 0:
                        snapshots.append(param().detach().cpu())
                        snapshot_steps.append(done)
                if edited and optimizer == "lbfgs":
                    opt = new_optimizer()  # the curvature history no longer matches the image
                if progress is not None:
                    progress(done, steps)
            with torch.no_grad():
                image = param().detach()
                final_values = _forward(model, objective, cap, image, image, truncate).detach()
        finally:
            cap.clear()
            for leaf in leaves:
                leaf.grad = None

    tensors: dict[str, torch.Tensor] = {
        "optimized": image,
        "image": image,
        "history": history,
        "values": final_values,
    }
    if snapshot_every:
        tensors["snapshots"] = torch.stack(snapshots)
        tensors["snapshot_steps"] = torch.tensor(snapshot_steps)
    settings = {
        "objective": objective.description,
        "layers": list(objective.layers),
        "param": param.describe(),
        "steps": steps,
        "lr": rate,
        "optimizer": optimizer,
        "transforms": tf.description if tf is not None else "none",
        "blur_every": blur_every,
        "blur_sigma": blur_sigma,
        "clip_pixels_percentile": clip_pixels_percentile,
        "clip_pixels_every": clip_pixels_every,
        "clip_grads_percentile": clip_grads_percentile,
        "snapshot_every": snapshot_every,
        "batch": param.batch,
        "image_size": list(size),
        "truncate": truncate,
    }
    layer = objective.layers[0] if len(objective.layers) == 1 else None
    provenance = make_provenance(model, "optimize", params=settings, layer=layer, seed=seed)
    provenance["objective"] = objective.description
    sources = [f"<optimized[{i}]>" for i in range(param.batch)]
    return Result(
        "optimized", tensors, provenance, sources=sources, originals=list(image.detach().cpu())
    )
