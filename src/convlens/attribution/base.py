"""The attribution template: method registry, shared plumbing and :func:`explain`.

Every method is a function ``method(model, x, target=None, **options) -> Tensor`` where
``model`` is a :class:`~convlens.models.model.Model`, ``x`` an input-space batch
``(N, C, H, W)`` and the result a float tensor on ``x``'s device: shaped like ``x`` for
input attributions, ``(N, 1, H, W)`` for class activation maps. A method registers itself
with :func:`register_method`; :func:`explain` (the one driver - override the method, not
this) prepares images, resolves the target, seeds randomness, calls the method and wraps
the tensor in a :class:`~convlens.results.Result` with the display map on the original
image and provenance.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from convlens.errors import BadInputError
from convlens.hooks import inference_context
from convlens.models.model import Batch, Model
from convlens.models.preprocess import map_to_original
from convlens.results import Result, make_provenance
from convlens.targets import Target, TargetLike, resolve_target

__all__ = [
    "METHODS",
    "MethodSpec",
    "default_cam_layer",
    "explain",
    "input_gradients",
    "reduce_channels",
    "register_method",
]

Method = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class MethodSpec:
    """A registered attribution method.

    ``output``: ``"input"`` (shaped like x) or ``"cam"`` (``(N, 1, H, W)``).
    ``reduce``: default channel reduction for display (``"max_abs"``, ``"sum"``, ``"l2"``).
    ``uses_layer``: the method takes ``layer=``; ``random``: it takes ``generator=``.
    """

    name: str
    fn: Method
    output: str
    reduce: str
    uses_layer: bool
    random: bool
    paper: str


METHODS: dict[str, MethodSpec] = {}


def register_method(
    name: str, *, output: str = "input", reduce: str = "sum", uses_layer: bool = False, random: bool = False, paper: str = ""
) -> Callable[[Method], Method]:
    """Decorator adding a method to :data:`METHODS` under ``name``."""

    def add(fn: Method) -> Method:
        METHODS[name] = MethodSpec(name, fn, output, reduce, uses_layer, random, paper)
        return fn

    return add


def input_gradients(
    model: Model, x: torch.Tensor, target: TargetLike = None, *, create_graph: bool = False
) -> tuple[torch.Tensor, Target]:
    """``d score / d x`` of an input-space batch and the resolved target (eval mode,
    parameters frozen; ``x`` untouched). The shared first step of gradient methods."""
    resolved = resolve_target(model, target, x.shape[0])
    xr = x.detach().clone().requires_grad_(True)
    with inference_context(model.module):
        scores, resolved = resolved.scores(model, xr)
        (grad,) = torch.autograd.grad(scores.sum(), xr, create_graph=create_graph)
    return grad, resolved


def reduce_channels(attribution: torch.Tensor, how: str) -> torch.Tensor:
    """``(N, C, H, W) -> (N, H, W)``: ``max_abs``, ``sum``, ``abs_sum``, ``l2`` or ``none`` (keeps C)."""
    if how == "none":
        return attribution
    if how == "max_abs":
        return attribution.abs().amax(dim=1)
    if how == "sum":
        return attribution.sum(dim=1)
    if how == "abs_sum":
        return attribution.abs().sum(dim=1)
    if how == "l2":
        return attribution.pow(2).sum(dim=1).sqrt()
    raise BadInputError(f"reduce={how!r}: choose max_abs, sum, abs_sum, l2 or none")


def default_cam_layer(model: Model) -> str:
    """The last layer with a spatial (N, C, h, w) output larger than 1x1: the usual CAM layer."""
    spatial = [r for r in model.layers() if r.is_leaf and r.calls == 1 and r.output_shape and len(r.output_shape) == 3 and r.output_shape[1] * r.output_shape[2] > 1]
    if not spatial:
        raise BadInputError(f"model {model.name} has no layer with a spatial output; pass layer=")
    return spatial[-1].name


def explain(
    model: Model,
    images: Any,
    method: str = "saliency",
    target: TargetLike = None,
    *,
    layer: str | None = None,
    reduce: str | None = None,
    seed: int = 0,
    **options: Any,
) -> Result:
    """Explain a model's decision on images with one attribution method.

    Parameters
    ----------
    model
        A :class:`~convlens.models.model.Model` (``convlens.load_model()`` or ``convlens.wrap(...)``).
    images
        Paths, arrays, PIL images, ``sample:NAME``, a pixel batch ``(N, C, H, W)`` or a :class:`Batch`.
    method
        A name in :data:`METHODS` (``convlens.attribution.METHODS``).
    target
        Class index, label, wnid, :class:`~convlens.targets.Neuron`, callable, or None (predicted class).
    layer
        For layer methods (CAMs): the dotted layer name; default the last spatial layer.
    reduce
        Channel reduction of the display map (default: the method's own).
    seed
        Seeds the ``torch.Generator`` of random methods (SmoothGrad, noise baselines).
    **options
        The method's own options (``n_steps``, ``baseline``, ``patch`` ...). Slow methods
        (Score-CAM, integrated gradients, SmoothGrad, occlusion) also take
        ``progress=callback(done, total)``; it is not recorded in the provenance.

    Returns
    -------
    Result
        Kind ``"attribution"``: ``attribution`` (the method's raw tensor, input space),
        ``map`` ``(N, H, W)`` (reduced), the display map on each original image, provenance.
    """
    import convlens.attribution  # noqa: F401  (registers every method)

    if method not in METHODS:
        raise BadInputError(f"unknown method {method!r}; choose from {', '.join(sorted(METHODS))}")
    spec = METHODS[method]
    if isinstance(images, Batch):
        batch = images
    else:
        seq = images if isinstance(images, (list, tuple)) or (isinstance(images, torch.Tensor) and images.dim() == 4) else [images]
        batch = model.prepare(seq)
    kwargs = dict(options)
    if spec.uses_layer:
        kwargs["layer"] = layer or default_cam_layer(model)
    elif layer is not None:
        raise BadInputError(f"method {method!r} takes no layer; layer methods are {', '.join(sorted(m for m, s in METHODS.items() if s.uses_layer))}")
    if spec.random:
        kwargs["generator"] = torch.Generator(device=batch.x.device).manual_seed(seed)
    resolved = resolve_target(model, target, len(batch))
    if resolved.kind == "predicted":
        resolved = Target("class", classes=model.logits(batch.x).argmax(dim=1).cpu())
    started = time.perf_counter()
    attribution = spec.fn(model, batch.x, resolved, **kwargs)
    seconds = time.perf_counter() - started
    how = reduce or spec.reduce
    reduced = attribution[:, 0] if spec.output == "cam" else reduce_channels(attribution, how)
    display = [map_to_original(reduced[i].detach().float().cpu(), g) for i, g in enumerate(batch.geometries)] if reduced.dim() == 3 else None
    # the generator is recorded as the seed; a progress callback is how the caller
    # watches, not what made the result (and a callable has no JSON form)
    params = {k: v for k, v in kwargs.items() if k not in ("generator", "progress")}
    params.update({"reduce": how if spec.output == "input" else None, "seconds": round(seconds, 4), "paper": spec.paper})
    provenance = make_provenance(model, method, params=params, target=resolved, layer=kwargs.get("layer"), seed=seed if spec.random else None)
    return Result(
        "attribution",
        {"attribution": attribution.detach(), "map": reduced.detach()},
        provenance,
        sources=batch.sources,
        display=display,
        originals=batch.originals,
    )


def method_names(output: str | None = None) -> Sequence[str]:
    """Registered method names, optionally only those with ``output`` ``"input"`` or ``"cam"``."""
    import convlens.attribution  # noqa: F401

    return sorted(n for n, s in METHODS.items() if output is None or s.output == output)
