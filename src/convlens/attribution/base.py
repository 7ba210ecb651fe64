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
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch

from convlens.errors import BadInputError
from convlens.hooks import capture, inference_context
from convlens.models.model import Batch, Model
from convlens.models.preprocess import map_to_original
from convlens.results import Result, make_provenance
from convlens.targets import Target, TargetLike, resolve_target

__all__ = [
    "METHODS",
    "MethodSpec",
    "applicable_methods",
    "default_cam_layer",
    "explain",
    "record_provenance",
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
    ``applies``: for methods that need something most models lack (attention maps need
    attention layers), ``applies(model) -> bool``; None: every model. Code that runs
    "every method" (``--method all``, the report, the demo) asks :meth:`applies_to`.
    """

    name: str
    fn: Method
    output: str
    reduce: str
    uses_layer: bool
    random: bool
    paper: str
    applies: Callable[[Model], bool] | None = None

    def applies_to(self, model: Model) -> bool:
        """Whether the method can run on ``model`` (cheap after the first call per model)."""
        return self.applies is None or bool(self.applies(model))


METHODS: dict[str, MethodSpec] = {}


def register_method(
    name: str,
    *,
    output: str = "input",
    reduce: str = "sum",
    uses_layer: bool = False,
    random: bool = False,
    paper: str = "",
    applies: Callable[[Model], bool] | None = None,
) -> Callable[[Method], Method]:
    """Decorator adding a method to :data:`METHODS` under ``name``."""

    def add(fn: Method) -> Method:
        METHODS[name] = MethodSpec(name, fn, output, reduce, uses_layer, random, paper, applies)
        return fn

    return add


def applicable_methods(model: Model, output: str | None = None) -> list[str]:
    """Sorted names of the registered methods that apply to ``model`` (what ``--method all`` runs)."""
    import convlens.attribution  # noqa: F401  (registers every method)

    return sorted(
        n
        for n, s in METHODS.items()
        if (output is None or s.output == output) and s.applies_to(model)
    )


# What a method decided while it ran (a token layer's grid, ...), collected by explain().
_NOTES: ContextVar[dict[str, Any] | None] = ContextVar("convlens_method_notes", default=None)


def record_provenance(key: str, value: Any) -> None:
    """Note ``key: value`` in the provenance ``params`` of the :func:`explain` call running
    this method (no-op when the method is called directly)."""
    notes = _NOTES.get()
    if notes is not None:
        notes[key] = value


@contextmanager
def _collect_notes() -> Iterator[dict[str, Any]]:
    notes: dict[str, Any] = {}
    token = _NOTES.set(notes)
    try:
        yield notes
    finally:
        _NOTES.reset(token)


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
    """The usual CAM layer: the last layer with a spatial (N, C, h, w) output larger than 1x1.

    On a token model (a vision transformer: token layers ``(N, T, C)`` after the last
    feature map), the last token layer of the model's width whose patch tokens still reach
    the output (found once per model by a gradient probe): the input normalisation of the
    last block (``blocks.11.norm1``), as pytorch-grad-cam advises for ViTs. Attention
    probabilities ``(heads, T, T)`` are never a CAM layer.
    """
    rows = [r for r in model.layers() if r.is_leaf and r.calls == 1 and r.output_shape]
    shapes = {r.name: tuple(r.output_shape or ()) for r in rows}
    tokens = [r for r in rows if len(shapes[r.name]) == 2 and _fills_grid(shapes[r.name][0], model)]
    counts = {shapes[r.name][0] for r in tokens}
    spatial = [
        r for r in rows
        if len(s := shapes[r.name]) == 3 and s[1] * s[2] > 1
        and not (s[1] == s[2] and s[1] in counts)
    ]  # fmt: skip
    if tokens and (not spatial or rows.index(tokens[-1]) > rows.index(spatial[-1])):
        return _default_token_layer(model, tokens)
    if not spatial:
        raise BadInputError(f"model {model.name} has no layer with a spatial output; pass layer=")
    return spatial[-1].name


def _fills_grid(n_tokens: int, model: Model) -> bool:
    from convlens.tokens import token_grid

    try:
        h, w, _ = token_grid(n_tokens, input_size=model.input_size)
    except BadInputError:
        return False
    return h * w > 1


_TOKEN_LAYERS: weakref.WeakKeyDictionary[torch.nn.Module, str] = weakref.WeakKeyDictionary()


def _default_token_layer(model: Model, rows: Sequence[Any]) -> str:
    """The last token layer of the model's width whose patch tokens reach the output.

    Token layers after the last attention only feed their own token forward, so the class
    token's score has no gradient at their patch positions (a Grad-CAM there is blank).
    """
    from convlens.tokens import token_grid

    if model.module in _TOKEN_LAYERS:
        return _TOKEN_LAYERS[model.module]
    width = Counter(r.output_shape[1] for r in rows).most_common(1)[0][0]
    names = [r.name for r in rows if r.output_shape[1] == width]
    h, w = model.input_size
    x = torch.randn(1, model.channels, h, w, generator=torch.Generator().manual_seed(0)).to(
        model.device, model.dtype
    )
    chosen = names[-1]
    with torch.enable_grad(), inference_context(model.module), capture(model.module, names) as acts:
        out = model.module(x.requires_grad_(True))
        grads = torch.autograd.grad(out.float().sum(), [acts[n] for n in names], allow_unused=True)
    for name, grad in zip(reversed(names), reversed(grads)):
        extra = token_grid(grad.shape[1], input_size=model.input_size)[2] if grad is not None else 0
        if grad is not None and bool(grad[:, extra:].abs().amax() > 0):
            chosen = name
            break
    _TOKEN_LAYERS[model.module] = chosen
    return chosen


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
        For layer methods (CAMs): the dotted layer name; default the last spatial layer
        (on a vision transformer, the last block's ``norm1``). A token layer ``(N, T, C)``
        is read on its patch grid: pass ``reshape=(h, w)`` to give the grid; the grid and
        the dropped class/register tokens are recorded in ``params["tokens"]``.
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
        seq = (
            images
            if isinstance(images, (list, tuple))
            or (isinstance(images, torch.Tensor) and images.dim() == 4)
            else [images]
        )
        batch = model.prepare(seq)
    kwargs = dict(options)
    if spec.uses_layer:
        kwargs["layer"] = layer or default_cam_layer(model)
    elif layer is not None:
        raise BadInputError(
            f"method {method!r} takes no layer; layer methods are {', '.join(sorted(m for m, s in METHODS.items() if s.uses_layer))}"
        )
    if spec.random:
        kwargs["generator"] = torch.Generator(device=batch.x.device).manual_seed(seed)
    resolved = resolve_target(model, target, len(batch))
    if resolved.kind == "predicted":
        resolved = Target("class", classes=model.logits(batch.x).argmax(dim=1).cpu())
    started = time.perf_counter()
    with _collect_notes() as notes:
        attribution = spec.fn(model, batch.x, resolved, **kwargs)
    seconds = time.perf_counter() - started
    how = reduce or spec.reduce
    reduced = attribution[:, 0] if spec.output == "cam" else reduce_channels(attribution, how)
    display = (
        [
            map_to_original(reduced[i].detach().float().cpu(), g)
            for i, g in enumerate(batch.geometries)
        ]
        if reduced.dim() == 3
        else None
    )
    # the generator is recorded as the seed; a progress callback is how the caller
    # watches, not what made the result (and a callable has no JSON form)
    params = {k: v for k, v in kwargs.items() if k not in ("generator", "progress")}
    params.update(
        {
            "reduce": how if spec.output == "input" else None,
            "seconds": round(seconds, 4),
            "paper": spec.paper,
        }
    )
    params.update(notes)  # e.g. a token layer's grid and dropped tokens
    provenance = make_provenance(
        model,
        method,
        params=params,
        target=resolved,
        layer=kwargs.get("layer"),
        seed=seed if spec.random else None,
    )
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
