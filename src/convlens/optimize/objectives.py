"""Objectives for image optimisation: what the engine *maximises*.

An :class:`Objective` maps an :class:`ObjectiveContext` (the image, what the model saw,
its logits and the captured activations of the layers the objective names) to one value
per image, shape ``(B,)``. The engine ascends ``objective(ctx).sum()`` (DESIGN.md,
"Objectives are maximised"): a loss or a regulariser enters with a minus sign. The image
priors :func:`l2` and :func:`total_variation` are *penalties* (positive, larger for rougher
or brighter images), so they are subtracted, as in the example below.

Objectives combine with ``+``, ``-``, unary ``-``, ``*`` and ``/`` by a number, and
``sum([...])``; the description composes with them::

    class_score(130) - 1e-4 * l2() - 0.5 * total_variation()

Layers are dotted names from ``named_modules()``; the engine checks them (and raises
:class:`~convlens.errors.LayerNotFoundError` with suggestions) before any forward pass.
A custom objective is ``Objective(fn, layers=("blocks.5",), description="mine")`` with
``fn(ctx) -> Tensor (B,)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import torch

from convlens.errors import BadInputError
from convlens.gram import gram_matrix

__all__ = [
    "Objective",
    "ObjectiveContext",
    "as_objective",
    "centre_bias",
    "channel",
    "class_score",
    "deepdream",
    "direction",
    "diversity",
    "feature_distance",
    "l2",
    "layer_mean",
    "neuron",
    "total_variation",
]

# Precedence of a description's top-level operator, to parenthesise only where needed.
_ATOM, _PRODUCT, _SUM = 0, 1, 2


@dataclass
class ObjectiveContext:
    """What an objective sees at one optimisation step.

    Attributes
    ----------
    image
        The parameterised image, pixel space ``(B, C, H, W)`` in [0, 1], before transforms.
    transformed
        What the model saw (pixel space, after the random transforms).
    logits
        The model's output for ``transformed``, ``(B, K)``; None when the engine runs with
        ``truncate=True`` (the forward pass stopped at the objective's layers).
    acts
        Outputs of the layers the objective needs, by dotted name.
    """

    image: torch.Tensor
    transformed: torch.Tensor
    logits: torch.Tensor | None
    acts: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def batch(self) -> int:
        return self.image.shape[0]

    def act(self, layer: str) -> torch.Tensor:
        """The captured output of ``layer``."""
        try:
            return self.acts[layer]
        except KeyError:
            raise BadInputError(
                f"layer {layer!r} was not captured; list it in the objective's layers"
            ) from None


def _fmt(k: float) -> str:
    return f"{k:g}"


class Objective:
    """A value per image to maximise, the layers it reads and a readable description.

    Parameters
    ----------
    fn
        ``fn(ctx) -> Tensor (B,)``, one value per image of the batch.
    layers
        Dotted names of the layers whose outputs ``fn`` reads from ``ctx.acts``.
    description
        How the objective prints (and is recorded in provenance).
    """

    def __init__(
        self,
        fn: Callable[[ObjectiveContext], torch.Tensor],
        layers: Iterable[str] = (),
        description: str = "objective",
        *,
        _precedence: int = _ATOM,
    ) -> None:
        if not callable(fn):
            raise TypeError(
                f"an objective needs a callable fn(ctx) -> (B,), not {type(fn).__name__}"
            )
        self.fn = fn
        self.layers: tuple[str, ...] = tuple(dict.fromkeys(layers))
        self.description = description
        self._precedence = _precedence
        self._negation_of: Objective | None = None

    def __call__(self, ctx: ObjectiveContext) -> torch.Tensor:
        value = self.fn(ctx)
        if not isinstance(value, torch.Tensor) or value.shape != (ctx.batch,):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise BadInputError(
                f"objective {self.description} returned {got}; an objective returns one value per image, shape ({ctx.batch},)"
            )
        return value

    def __repr__(self) -> str:
        return f"Objective({self.description})"

    def _wrapped(self, above: int) -> str:
        return f"({self.description})" if self._precedence >= above else self.description

    # -- arithmetic -----------------------------------------------------------------------
    def __add__(self, other: Any) -> Objective:
        if isinstance(other, Objective):
            if other._negation_of is not None:  # a + (-b) reads "a - b"
                return self - other._negation_of
            a, b = self, other
            return Objective(
                lambda ctx: a(ctx) + b(ctx),
                (*a.layers, *b.layers),
                f"{a.description} + {b.description}",
                _precedence=_SUM,
            )
        if isinstance(other, Real) and not isinstance(other, bool):
            if other == 0:
                return self
            k = float(other)
            sign = "+" if k > 0 else "-"
            return Objective(
                lambda ctx: self(ctx) + k,
                self.layers,
                f"{self.description} {sign} {_fmt(abs(k))}",
                _precedence=_SUM,
            )
        return NotImplemented

    def __radd__(self, other: Any) -> Objective:
        if isinstance(other, Real) and not isinstance(other, bool):
            return self + other  # sum([...]) starts from 0
        return NotImplemented

    def __neg__(self) -> Objective:
        if self._negation_of is not None:
            return self._negation_of
        negated = Objective(
            lambda ctx: -self(ctx), self.layers, f"-{self._wrapped(_PRODUCT)}", _precedence=_PRODUCT
        )
        negated._negation_of = self
        return negated

    def __sub__(self, other: Any) -> Objective:
        if isinstance(other, Objective):
            a, b = self, other
            return Objective(
                lambda ctx: a(ctx) - b(ctx),
                (*a.layers, *b.layers),
                f"{a.description} - {b._wrapped(_SUM)}",
                _precedence=_SUM,
            )
        if isinstance(other, Real) and not isinstance(other, bool):
            return self + (-float(other))
        return NotImplemented

    def __rsub__(self, other: Any) -> Objective:
        if isinstance(other, Real) and not isinstance(other, bool):
            return (-self) + other
        return NotImplemented

    def __mul__(self, other: Any) -> Objective:
        if isinstance(other, Real) and not isinstance(other, bool):
            k = float(other)
            if not math.isfinite(k):
                raise BadInputError(f"an objective's weight must be finite, got {k}")
            if k < 0:
                return -(self * (-k))
            return Objective(
                lambda ctx: k * self(ctx),
                self.layers,
                f"{_fmt(k)}*{self._wrapped(_SUM)}",
                _precedence=_PRODUCT,
            )
        if isinstance(other, Objective):
            raise TypeError(
                "objectives multiply by numbers only (weight * objective), not by another Objective"
            )
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Objective:
        if isinstance(other, Real) and not isinstance(other, bool):
            if other == 0:
                raise ZeroDivisionError("objective divided by zero")
            return self * (1.0 / float(other))
        return NotImplemented


def as_objective(value: Objective | Callable[[ObjectiveContext], torch.Tensor]) -> Objective:
    """An :class:`Objective` as is, or a plain ``fn(ctx) -> (B,)`` wrapped as one (no layers)."""
    if isinstance(value, Objective):
        return value
    if callable(value):
        return Objective(value, (), getattr(value, "__name__", "custom"))
    raise TypeError(
        f"expected an Objective or a callable fn(ctx) -> (B,), got {type(value).__name__}"
    )


# -- helpers ------------------------------------------------------------------------------
def _per_image(
    value: int | Sequence[int] | torch.Tensor, batch: int, what: str, device: torch.device
) -> torch.Tensor:
    """``value`` as a ``(batch,)`` long tensor: one int for all images, or one per image."""
    t = torch.as_tensor(value, dtype=torch.long, device=device)
    if t.dim() == 0:
        return t.expand(batch)
    if t.shape != (batch,):
        raise BadInputError(
            f"{what} has {t.numel()} entries but the batch has {batch} images; pass one int or {batch} ints"
        )
    return t


def _check_channels(act: torch.Tensor, ch: torch.Tensor, layer: str) -> None:
    if act.dim() < 2:
        raise BadInputError(
            f"layer {layer!r} output has shape {tuple(act.shape)}; expected (B, C, ...)"
        )
    n = act.shape[1]
    if bool(((ch < 0) | (ch >= n)).any()):
        raise BadInputError(
            f"channel {ch.tolist()} out of range for layer {layer!r}, which has {n} channels (0-{n - 1})"
        )


def _describe_index(value: int | Sequence[int] | torch.Tensor) -> str:
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, int):
        return str(value)
    return "[" + ",".join(str(int(v)) for v in value) + "]"


def _spatial_mean(act: torch.Tensor) -> torch.Tensor:
    """``(B, C, ...)`` -> ``(B, C)``, averaging every dimension after the channels."""
    return act.flatten(2).mean(dim=2) if act.dim() > 2 else act


def _check_index(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, Sequence, torch.Tensor)):
        raise BadInputError(
            f"{what} must be an int or one int per image, got {type(value).__name__}"
        )


# -- objectives on the model --------------------------------------------------------------
def class_score(cls: int | Sequence[int] | torch.Tensor) -> Objective:
    """The raw logit of class ``cls`` (not the softmax probability).

    ``f(x) = z_cls(x)``. Maximising the logit rather than the probability makes the image
    look like the class instead of unlike the others (Simonyan, Vedaldi & Zisserman 2013,
    "Deep Inside Convolutional Networks", arXiv:1312.6034).

    Parameters
    ----------
    cls
        A class index for every image, or one index per image.

    Examples
    --------
    >>> objective = class_score(130) - 1e-4 * l2()
    """
    _check_index(cls, "cls")

    def fn(ctx: ObjectiveContext) -> torch.Tensor:
        if ctx.logits is None:
            raise BadInputError(
                "class_score needs the logits; it cannot be used with truncate=True"
            )
        if ctx.logits.dim() != 2:
            raise BadInputError(
                f"class_score needs (B, classes) logits; the model returns {tuple(ctx.logits.shape)}"
            )
        idx = _per_image(cls, ctx.batch, "cls", ctx.logits.device)
        k = ctx.logits.shape[1]
        if bool(((idx < 0) | (idx >= k)).any()):
            raise BadInputError(
                f"class {idx.tolist()} out of range: the model has {k} outputs (0-{k - 1})"
            )
        return ctx.logits.gather(1, idx[:, None])[:, 0]

    return Objective(fn, (), f"class_score({_describe_index(cls)})")


def channel(layer: str, ch: int | Sequence[int] | torch.Tensor) -> Objective:
    """The spatial mean of channel ``ch`` of ``layer``.

    ``f(x) = mean_{y,x} A_ch(x)[y, x]`` (Erhan, Bengio, Courville & Vincent 2009,
    "Visualizing Higher-Layer Features of a Deep Network", U. Montreal tech. report 1341,
    no arXiv version; Olah, Mordvintsev & Schubert 2017, "Feature Visualization",
    Distill, doi:10.23915/distill.00007).

    ``ch`` may give one channel per image: image ``b`` then maximises channel ``ch[b]``
    (one batched optimisation for a whole layer).

    Examples
    --------
    >>> objective = channel("blocks.5", 12)
    """
    _check_index(ch, "channel")

    def fn(ctx: ObjectiveContext) -> torch.Tensor:
        act = ctx.act(layer)
        idx = _per_image(ch, ctx.batch, "channel", act.device)
        _check_channels(act, idx, layer)
        return _spatial_mean(act).gather(1, idx[:, None])[:, 0]

    return Objective(fn, (layer,), f"channel({layer}:{_describe_index(ch)})")


def neuron(
    layer: str, ch: int | Sequence[int] | torch.Tensor, y: int | None = None, x: int | None = None
) -> Objective:
    """One unit ``A_ch[y, x]`` of ``layer``; the centre unit when ``y``/``x`` are None.

    ``f(x) = A_ch(x)[y, x]``, with ``y = H // 2``, ``x = W // 2`` by default (Erhan et al.
    2009; Olah et al. 2017, Distill). For a layer without spatial dimensions (a linear
    layer), the unit is ``A_ch``.

    Examples
    --------
    >>> objective = neuron("blocks.5", 12, 7, 7)
    """
    _check_index(ch, "channel")
    for name, v in (("y", y), ("x", x)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise BadInputError(f"neuron {name} must be an int or None, got {v!r}")

    def fn(ctx: ObjectiveContext) -> torch.Tensor:
        act = ctx.act(layer)
        idx = _per_image(ch, ctx.batch, "channel", act.device)
        _check_channels(act, idx, layer)
        picked = act[torch.arange(ctx.batch, device=act.device), idx]  # (B, ...)
        if picked.dim() == 1:
            return picked
        if picked.dim() != 3:
            raise BadInputError(
                f"neuron needs a (B, C, H, W) layer output; {layer!r} gives {tuple(act.shape)}"
            )
        h, w = picked.shape[1:]
        yy = h // 2 if y is None else y
        xx = w // 2 if x is None else x
        if not (0 <= yy < h and 0 <= xx < w):
            raise BadInputError(f"unit ({yy}, {xx}) is outside the {h}x{w} map of layer {layer!r}")
        return picked[:, yy, xx]

    where = (
        "" if y is None and x is None else f"[{'c' if y is None else y},{'c' if x is None else x}]"
    )
    return Objective(fn, (layer,), f"neuron({layer}:{_describe_index(ch)}{where})")


def layer_mean(layer: str) -> Objective:
    """The mean of the whole activation of ``layer``: ``f(x) = mean_{c,y,x} A(x)``.

    Excites every channel at once, the "layer" objective of Olah, Mordvintsev & Schubert
    2017 ("Feature Visualization", Distill, doi:10.23915/distill.00007; no arXiv version);
    :func:`deepdream` is its squared form.
    """

    def fn(ctx: ObjectiveContext) -> torch.Tensor:
        return ctx.act(layer).flatten(1).mean(dim=1)

    return Objective(fn, (layer,), f"layer_mean({layer})")


def direction(layer: str, vector: torch.Tensor | Sequence[float]) -> Objective:
    """A direction in ``layer``'s activation space.

    ``f(x) = <mean_{y,x} A(x), v / ||v||>``: the spatially averaged activation projected
    on the unit vector ``v`` (Olah et al. 2017, Distill; Kim et al. 2018, "Interpretability
    Beyond Feature Attribution (TCAV)", arXiv:1711.11279). ``vector`` is ``(C,)`` for
    every image or ``(B, C)``, one per image.
    """
    v = torch.as_tensor(vector).detach()
    if v.dim() not in (1, 2) or v.numel() == 0:
        raise BadInputError(f"direction vector must be (C,) or (B, C), got shape {tuple(v.shape)}")
    norms = v.norm(dim=-1, keepdim=True)
    if bool((norms == 0).any()):
        raise BadInputError("direction vector is zero; pass a non-zero direction")
    unit = v / norms

    def fn(ctx: ObjectiveContext) -> torch.Tensor:
        mean = _spatial_mean(ctx.act(layer))
        u = unit.to(mean.device, mean.dtype)
        if u.shape[-1] != mean.shape[1]:
            raise BadInputError(
                f"direction has {u.shape[-1]} entries but layer {layer!r} has {mean.shape[1]} channels"
            )
        if u.dim() == 2 and u.shape[0] != ctx.batch:
            raise BadInputError(
                f"direction has {u.shape[0]} rows but the batch has {ctx.batch} images; pass (C,) or ({ctx.batch}, C)"
            )
        projected: torch.Tensor = (mean * u).sum(dim=1)
        return projected

    return Objective(fn, (layer,), f"direction({layer})")


def feature_distance(layer: str, code: torch.Tensor) -> Objective:
    """Negative normalised distance to a feature code, for inversion.

    ``f(x) = -||A(x) - A0||^2 / ||A0||^2``, summed over the whole activation (Mahendran &
    Vedaldi 2015, "Understanding Deep Image Representations by Inverting Them",
    arXiv:1412.0035). ``code`` is ``A0`` for every image, or one per image
    ``(B, ...)``.
    """
    target = torch.as_tensor(code).detach()
    if target.dim() == 0 or not bool((target != 0).any()):
        raise BadInputError(
            "feature code is a scalar, empty or all zero; pass the activation to invert, (C, H, W) or (B, C, H, W)"
        )

    def fn(ctx: ObjectiveContext) -> torch.Tensor:
        act = ctx.act(layer)
        t = target.to(act.device, act.dtype)
        if t.dim() == act.dim() - 1:
            t = t.unsqueeze(0)
        if t.shape[1:] != act.shape[1:] or t.shape[0] not in (1, act.shape[0]):
            raise BadInputError(
                f"feature code has shape {tuple(target.shape)} but layer {layer!r} gives {tuple(act.shape)}"
            )
        t = t.expand_as(act)
        norm = t.flatten(1).pow(2).sum(dim=1).clamp_min(torch.finfo(act.dtype).tiny)
        return -(act - t).flatten(1).pow(2).sum(dim=1) / norm

    return Objective(fn, (layer,), f"feature_distance({layer})")


def deepdream(layer: str) -> Objective:
    """DeepDream's "boost whatever the layer sees": ``f(x) = mean_{c,y,x} A(x)^2``.

    (Mordvintsev, Olah & Tyka 2015, "Inceptionism: Going Deeper into Neural Networks",
    Google Research blog, no arXiv version; the squared L2 norm of the activation,
    averaged.)
    """

    def fn(ctx: ObjectiveContext) -> torch.Tensor:
        return ctx.act(layer).flatten(1).pow(2).mean(dim=1)

    return Objective(fn, (layer,), f"deepdream({layer})")


def diversity(layer: str) -> Objective:
    """Batch diversity: minus the mean pairwise cosine similarity of the images' Gram matrices.

    ``f = -1/(B(B-1)) sum_{a != b} <G_a, G_b> / (||G_a|| ||G_b||)`` with ``G`` the Gram
    matrix of ``layer``'s activation (Olah, Mordvintsev & Schubert 2017, "Feature
    Visualization", Distill, "Diversity"; Gram matrices as in Gatys, Ecker & Bethge 2015,
    arXiv:1508.06576). Computed with one batched matmul for the Gram matrices and one
    matmul for all pairs. The value is the same for every image of the batch (so the
    batch sum the engine ascends is ``B`` times it); 0 for a batch of one.
    """

    def fn(ctx: ObjectiveContext) -> torch.Tensor:
        act = ctx.act(layer)
        b = act.shape[0]
        if b < 2:
            return act.new_zeros(b)
        grams = gram_matrix(act, normalize="hw").flatten(1)
        unit = grams / grams.norm(dim=1, keepdim=True).clamp_min(torch.finfo(act.dtype).tiny)
        sims = unit @ unit.T
        off_diagonal = sims.sum() - sims.diagonal().sum()
        value: torch.Tensor = -off_diagonal / (b * (b - 1))
        return value.expand(b)

    return Objective(fn, (layer,), f"diversity({layer})")


def centre_bias(
    layer: str, ch: int | Sequence[int] | torch.Tensor, sigma: float = 0.25
) -> Objective:
    """A channel objective weighted toward the centre of the map.

    ``f(x) = sum_{y,x} w(y, x) A_ch(x)[y, x]`` with ``w`` a Gaussian centred in the map,
    standard deviation ``sigma`` times the map's side, normalised to sum to 1. It rewards
    one centred instance of the feature instead of a texture of repeats: Nguyen, Yosinski
    & Clune 2016, "Multifaceted Feature Visualization" (center-biased regularization),
    arXiv:1602.03616, who bias the optimisation toward the image centre.
    """
    _check_index(ch, "channel")
    if not sigma > 0:
        raise BadInputError(
            f"centre_bias sigma must be > 0 (a fraction of the map size), got {sigma}"
        )

    def fn(ctx: ObjectiveContext) -> torch.Tensor:
        act = ctx.act(layer)
        if act.dim() != 4:
            raise BadInputError(
                f"centre_bias needs a (B, C, H, W) layer output; {layer!r} gives {tuple(act.shape)}"
            )
        idx = _per_image(ch, ctx.batch, "channel", act.device)
        _check_channels(act, idx, layer)
        h, w = act.shape[2:]
        ys = (torch.arange(h, device=act.device, dtype=act.dtype) - (h - 1) / 2) / (sigma * h)
        xs = (torch.arange(w, device=act.device, dtype=act.dtype) - (w - 1) / 2) / (sigma * w)
        weights = torch.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2))
        weights = weights / weights.sum()
        picked = act[torch.arange(ctx.batch, device=act.device), idx]
        return (picked * weights).flatten(1).sum(dim=1)

    return Objective(
        fn, (layer,), f"centre_bias({layer}:{_describe_index(ch)}, sigma={_fmt(sigma)})"
    )


# -- regularisers on the image (already negated: they are maximised too) -----------------
def l2() -> Objective:
    """The L2 penalty, the mean squared centred pixel: ``f(x) = mean((x - 0.5)^2)``.

    The L2 decay of Simonyan et al. 2013 (arXiv:1312.6034) and Yosinski, Clune, Nguyen,
    Fuchs & Lipson 2015 ("Understanding Neural Networks Through Deep Visualization",
    arXiv:1506.06579), on pixel-space images centred on grey. A penalty: subtract it,
    ``class_score(c) - 1e-4 * l2()``.
    """

    def fn(ctx: ObjectiveContext) -> torch.Tensor:
        return (ctx.image - 0.5).flatten(1).pow(2).mean(dim=1)

    return Objective(fn, (), "l2()")


def total_variation(p: float = 1.0) -> Objective:
    """The total-variation penalty of the image (subtract it: ``... - 0.5 * total_variation()``).

    ``f(x) = mean |x[y+1, x] - x[y, x]|^p + mean |x[y, x+1] - x[y, x]|^p``, the means
    over channels and positions of vertical and horizontal neighbour differences. ``p=1``
    (default) is anisotropic TV, which keeps edges; ``p=2`` is the smooth quadratic form
    (Mahendran & Vedaldi 2015, arXiv:1412.0035, use ``p = beta``). Computed on the image
    before transforms.
    """
    if not p > 0:
        raise BadInputError(f"total_variation p must be > 0, got {p}")

    def fn(ctx: ObjectiveContext) -> torch.Tensor:
        img = ctx.image
        dy = (img[:, :, 1:, :] - img[:, :, :-1, :]).abs().pow(p).flatten(1).mean(dim=1)
        dx = (img[:, :, :, 1:] - img[:, :, :, :-1]).abs().pow(p).flatten(1).mean(dim=1)
        return dy + dx

    return Objective(fn, (), "total_variation()" if p == 1 else f"total_variation(p={_fmt(p)})")
