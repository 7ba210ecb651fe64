"""Dataset-bias check: how much of a model's attribution falls outside the object.

A model that learned a shortcut (the wolf/snow example of Ribeiro, Singh & Guestrin, "Why
Should I Trust You?", KDD 2016, arXiv:1602.04938) explains its decisions with the
background. Given object masks, the **outside-object share** of a map ``A`` over image
pixels ``p`` with object mask ``M`` is

    share = sum_{p not in M} A'(p) / sum_p A'(p),    A' = |A|      (sign="abs", default)
                                                     A' = max(A, 0) (sign="positive")

On a non-negative map (Grad-CAM, saliency) both choices are ``A`` itself. On a signed map
(gradient x input, integrated gradients) ``"abs"`` counts evidence for and against the
class alike, ``"positive"`` only evidence for it. A map with no mass (``sum A' = 0``) has
no share: NaN, left out of the means. The share a uniform map would give is the
background's area fraction, reported alongside as the level that means "no preference".

:func:`bias_check` runs an attribution method on labelled images (the predicted class is
explained: the question is why the model said what it said), and reports per image and
overall the share, the accuracy, the misclassified images ranked by share (most
background-driven first) and, given a counter-cue split (backgrounds that name another
class), the accuracy there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from convlens.errors import BadInputError
from convlens.models.model import Model
from convlens.progress import ProgressFn

__all__ = ["BiasReport", "SplitReport", "bias_check", "outside_share"]

SIGNS = ("abs", "positive")


def outside_share(maps: Tensor, masks: Tensor, *, sign: str = "abs") -> Tensor:
    """Share of each map's attribution mass outside the object mask.

    Parameters
    ----------
    maps
        ``(N, H, W)`` attribution maps (``(N, 1, H, W)`` is squeezed).
    masks
        ``(N, H, W)`` object masks, bool or {0, 1}, same size as the maps.
    sign
        ``"abs"`` (``|A|``, default) or ``"positive"`` (``max(A, 0)``) for signed maps.

    Returns
    -------
    Tensor
        float64 ``(N,)`` in [0, 1]; NaN where a map has no mass.

    Raises
    ------
    BadInputError
        Shapes differ or ``sign`` is unknown.
    """
    if sign not in SIGNS:
        raise BadInputError(f"sign={sign!r}: choose abs or positive")
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3 or tuple(masks.shape) != tuple(maps.shape):
        raise BadInputError(
            f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} must both be (N, H, W) of the same size"
        )
    a = maps.detach().to(torch.float64)
    a = a.abs() if sign == "abs" else a.clamp(min=0)
    inside = masks.to(torch.bool)
    total = a.sum(dim=(1, 2))
    outside = a.masked_fill(inside, 0.0).sum(dim=(1, 2))
    share = outside / total
    return torch.where(total > 0, share, torch.full_like(share, math.nan)).cpu()


@dataclass
class SplitReport:
    """One labelled split: per-image shares, predictions and the summary numbers."""

    shares: Tensor  # float64 (N,), NaN for maps without mass
    predicted: Tensor  # int64 (N,)
    labels: Tensor  # int64 (N,)
    background_fraction: Tensor  # float64 (N,): 1 - mask area / image area
    maps: Tensor  # float32 (N, H, W): the attribution maps, for pictures
    masks: Tensor  # bool (N, H, W)
    sources: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).double().mean())

    @property
    def mean_share(self) -> float:
        """Mean outside-object share over the images whose map has mass."""
        return float(torch.nanmean(self.shares))

    @property
    def mean_background_fraction(self) -> float:
        return float(self.background_fraction.mean())

    def misclassified(self) -> list[int]:
        """Indices of the wrong predictions, largest outside-object share first (NaN last)."""
        wrong = torch.nonzero(self.predicted != self.labels).flatten().tolist()
        return sorted(
            wrong,
            key=lambda i: (
                math.isnan(float(self.shares[i])),
                -float(self.shares[i]) if not math.isnan(float(self.shares[i])) else 0.0,
                i,
            ),
        )

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        ranked = self.misclassified()
        return {
            "images": len(self.labels),
            "accuracy": round(self.accuracy, 6),
            "mean_outside_share": _num(self.mean_share),
            "mean_background_fraction": round(self.mean_background_fraction, 6),
            "per_image": [
                {"source": s, "label": int(y), "predicted": int(p), "outside_share": _num(float(v))}
                for s, y, p, v in zip(self._names(), self.labels, self.predicted, self.shares)
            ],
            "misclassified": [
                {
                    "source": self._names()[i],
                    "label": int(self.labels[i]),
                    "predicted": int(self.predicted[i]),
                    "outside_share": _num(float(self.shares[i])),
                }
                for i in (ranked if top is None else ranked[:top])
            ],
        }

    def _names(self) -> list[str]:
        return self.sources or [f"<image {i}>" for i in range(len(self.labels))]


@dataclass
class BiasReport:
    """What :func:`bias_check` found: the main split, the optional counter-cue split, settings."""

    main: SplitReport
    counter: SplitReport | None
    method: str
    sign: str
    layer: str | None
    model: str
    provenance: dict[str, Any] = field(
        default_factory=dict
    )  # model id, weights sha256, versions, time

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        return {
            "model": self.model,
            "method": self.method,
            "layer": self.layer,
            "sign": self.sign,
            "main": self.main.to_dict(top),
            "counter": self.counter.to_dict(top) if self.counter is not None else None,
            "counter_accuracy": round(self.counter.accuracy, 6)
            if self.counter is not None
            else None,
            "provenance": self.provenance,
        }


def _num(v: float) -> float | None:
    return None if math.isnan(v) else round(v, 6)


def _split(
    model: Model,
    x: Tensor,
    labels: Tensor,
    masks: Tensor,
    method: str,
    layer: str | None,
    sign: str,
    batch_size: int,
    sources: list[str] | None,
    progress: ProgressFn | None,
    done: int,
    total: int,
) -> SplitReport:
    from convlens.metrics.sanity import method_maps

    n = x.shape[0]
    if labels.shape != (n,) or masks.dim() != 3 or masks.shape[0] != n:
        raise BadInputError(
            f"{n} images need {n} labels and {n} (H, W) masks; got labels {tuple(labels.shape)}, masks {tuple(masks.shape)}"
        )
    predicted = model.logits(x).argmax(dim=1).cpu()
    shares, all_maps, maps_seen = [], [], 0
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        maps = method_maps(model, x[lo:hi], method, predicted[lo:hi].tolist(), layer=layer)
        if tuple(maps.shape[1:]) != tuple(masks.shape[1:]):
            raise BadInputError(
                f"masks are {tuple(masks.shape[1:])} but the maps are {tuple(maps.shape[1:])} (the model's input size)"
            )
        shares.append(outside_share(maps, masks[lo:hi], sign=sign))
        all_maps.append(maps.float().cpu())
        maps_seen += hi - lo
        if progress is not None:
            progress(done + maps_seen, total)
    m = masks.to(torch.bool)
    background = 1.0 - m.flatten(1).double().mean(dim=1)
    return SplitReport(
        torch.cat(shares),
        predicted,
        labels.cpu().long(),
        background.cpu(),
        torch.cat(all_maps),
        m.cpu(),
        list(sources or []),
    )


def bias_check(
    model: Model,
    x: Tensor,
    labels: Tensor,
    masks: Tensor,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    sign: str = "abs",
    counter: tuple[Tensor, Tensor, Tensor] | None = None,
    sources: list[str] | None = None,
    counter_sources: list[str] | None = None,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
) -> BiasReport:
    """Outside-object attribution share and accuracy of a model on labelled images with masks.

    Parameters
    ----------
    model
        A classifier :class:`~convlens.models.model.Model`.
    x
        ``(N, C, H, W)`` input-space batch (``model.prepare(...).x``).
    labels
        int ``(N,)`` true classes.
    masks
        ``(N, H, W)`` object masks at the model's input size (True on the object).
    method
        A registered attribution method (default ``gradcam``); the predicted class is explained.
    layer
        For layer methods (CAMs): the layer (default the last spatial one).
    sign
        How signed maps count (see :func:`outside_share`).
    counter
        ``(x, labels, masks)`` of a counter-cue split, reported the same way.
    sources, counter_sources
        Names of the images (file paths) for the per-image rows.
    batch_size
        Images per attribution call.
    progress
        ``progress(done, total)`` over all images of both splits.

    Returns
    -------
    BiasReport
    """
    import convlens.attribution  # noqa: F401  (registers every method)
    from convlens.attribution.base import METHODS, default_cam_layer

    if method not in METHODS:
        raise BadInputError(f"unknown method {method!r}; choose from {', '.join(sorted(METHODS))}")
    if sign not in SIGNS:
        raise BadInputError(f"sign={sign!r}: choose abs or positive")
    if batch_size < 1:
        raise BadInputError(f"batch_size={batch_size}: must be >= 1")
    if METHODS[method].uses_layer:
        layer = layer or default_cam_layer(model)
    total = x.shape[0] + (counter[0].shape[0] if counter is not None else 0)
    main = _split(
        model, x, labels, masks, method, layer, sign, batch_size, sources, progress, 0, total
    )
    other = None
    if counter is not None:
        cx, cy, cm = counter
        other = _split(
            model,
            cx,
            cy,
            cm,
            method,
            layer,
            sign,
            batch_size,
            counter_sources,
            progress,
            x.shape[0],
            total,
        )
    from convlens.results import make_provenance

    params = {
        "sign": sign,
        "images": x.shape[0],
        "counter_images": other and len(other.labels),
        "target": "predicted",
    }
    return BiasReport(
        main,
        other,
        method,
        sign,
        layer,
        model.name,
        make_provenance(model, method, params=params, layer=layer),
    )
