"""Targets: what a method explains, maximises or attacks.

A target is one of (DESIGN.md "Targets"):

- a class index (``int``), or one per image (a list or 1-D tensor of ints);
- a label or WordNet id (``"tabby"``, ``"n02123045"``); ambiguous names are refused;
- a :class:`Neuron` ``(layer, channel, y=None, x=None)``: one unit of a layer, or the
  spatial mean of a channel when ``y``/``x`` are None (CLI ``layer:channel[:y:x]``);
- a callable ``output -> (N,)`` scores, for models that are not plain classifiers;
- ``None``: the predicted class of each image.

:func:`resolve_target` turns any of these into a :class:`Target`, whose
:meth:`Target.scores` runs the forward pass and returns one differentiable score per image.

Ready-made callables for outputs that are not ``(N, classes)``:

- :func:`region` ``(class, mask)``: the sum of a class's logits over a mask, for
  segmentation outputs ``(N, classes, H, W)``;
- :func:`box` ``(index)``: a detector's score for one box;
- :func:`similarity` ``(reference)``: cosine similarity of an embedding to a reference.

A callable with a ``bind(model)`` method (as these three have) is bound to the model when
the target is resolved, so it can read the model's labels or embed a reference image; the
bound callable is what runs. A callable with ``describe()`` / ``to_dict()`` is recorded
by them in provenance (``"region(class=1 (square), mask=37 px of 32x32)"``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from convlens.errors import BadInputError, TargetError
from convlens.hooks import capture, eval_mode

if TYPE_CHECKING:
    from convlens.models.model import Model

__all__ = [
    "Box",
    "Neuron",
    "Region",
    "Similarity",
    "Target",
    "TargetLike",
    "box",
    "load_mask",
    "region",
    "resolve_target",
    "similarity",
]


@dataclass(frozen=True)
class Neuron:
    """A unit (``y``, ``x`` given) or a whole channel (spatial mean) of a layer."""

    layer: str
    channel: int
    y: int | None = None
    x: int | None = None

    @classmethod
    def parse(cls, text: str) -> Neuron:
        """Parse the CLI form ``layer:channel[:y:x]``."""
        parts = text.split(":")
        if len(parts) not in (2, 4) or not all(p.strip().lstrip("-").isdigit() for p in parts[1:]):
            raise TargetError(
                f"neuron {text!r} is not of the form layer:channel or layer:channel:y:x (e.g. blocks.5:12 or blocks.5:12:7:7)"
            )
        numbers = [int(p) for p in parts[1:]]
        return cls(parts[0], *numbers)

    def describe(self) -> str:
        where = f"[{self.y},{self.x}]" if self.y is not None else " (spatial mean)"
        return f"{self.layer} channel {self.channel}{where}"


@dataclass(frozen=True)
class Target:
    """A resolved target. ``classes`` is set for class targets (after :meth:`scores`,
    also for the default predicted-class target)."""

    kind: str  # "class", "predicted", "neuron" or "callable"
    classes: torch.Tensor | None = None
    neuron: Neuron | None = None
    fn: Callable[[torch.Tensor], torch.Tensor] | None = None

    def describe(self, labels: Sequence[str] | None = None) -> str:
        if self.kind in ("class", "predicted") and self.classes is not None:
            idx = self.classes.tolist()
            names = [f"{i} ({labels[i]})" if labels else str(i) for i in idx]
            return ", ".join(dict.fromkeys(names))
        if self.kind == "predicted":
            return "predicted class"
        if self.neuron is not None:
            return self.neuron.describe()
        describe = getattr(self.fn, "describe", None)
        if callable(describe):
            return str(describe())
        return getattr(self.fn, "__name__", "callable")

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"kind": self.kind}
        if self.classes is not None:
            d["classes"] = self.classes.tolist()
        if self.neuron is not None:
            d["neuron"] = {
                "layer": self.neuron.layer,
                "channel": self.neuron.channel,
                "y": self.neuron.y,
                "x": self.neuron.x,
            }
        if self.fn is not None:
            describe = getattr(self.fn, "describe", None)
            if callable(describe):
                d["callable"] = str(describe())
            else:
                d["callable"] = getattr(self.fn, "__qualname__", repr(self.fn))
            to_dict = getattr(self.fn, "to_dict", None)
            if callable(to_dict):
                d["helper"] = to_dict()
        return d

    def scores(self, model: Model, x: torch.Tensor) -> tuple[torch.Tensor, Target]:
        """Forward ``x`` (input space) and return ``(scores (N,), target)``.

        For the predicted-class target, the returned target has ``classes`` filled in.
        """
        n = x.shape[0]
        if self.kind == "neuron":
            assert self.neuron is not None
            neuron = self.neuron
            module = model.score_module([neuron.layer])
            with capture(module, [neuron.layer]) as acts:
                module(x)
            act = acts[neuron.layer]
            return _neuron_scores(act, neuron), self
        output = model.score_module()(x)
        if self.kind == "callable":
            assert self.fn is not None
            scores = self.fn(output)
            if not isinstance(scores, torch.Tensor) or scores.shape != (n,):
                got = (
                    tuple(scores.shape)
                    if isinstance(scores, torch.Tensor)
                    else type(scores).__name__
                )
                raise TargetError(
                    f"target callable must return a tensor of shape ({n},), one score per image; it returned {got}"
                )
            return scores, self
        return self.scores_from_logits(output)

    def scores_from_logits(self, output: torch.Tensor) -> tuple[torch.Tensor, Target]:
        """Scores of a class target from logits already computed (``(N, classes)``)."""
        if self.kind not in ("class", "predicted"):
            raise TargetError(f"a {self.kind} target is not read from the logits")
        logits = _as_logits(output)
        n = logits.shape[0]
        if self.kind == "predicted":
            classes = logits.detach().argmax(dim=1)
            target = Target("predicted", classes=classes)
        else:
            assert self.classes is not None
            classes = self.classes.to(logits.device)
            if classes.numel() == 1 and n > 1:
                classes = classes.expand(n)
            if classes.shape[0] != n:
                raise TargetError(
                    f"target has {classes.shape[0]} entries but x has batch size {n}; pass one class or {n} classes"
                )
            if int(classes.max()) >= logits.shape[1] or int(classes.min()) < 0:
                raise TargetError(
                    f"class index {int(classes.max())} is out of range: the model has {logits.shape[1]} outputs"
                )
            target = Target("class", classes=classes)
        return logits.gather(1, classes.view(-1, 1)).squeeze(1), target


# what every ``target=`` accepts; an already resolved Target passes through
TargetLike = (
    int
    | str
    | Sequence[int]
    | torch.Tensor
    | Neuron
    | Callable[[torch.Tensor], torch.Tensor]
    | Target
    | None
)


def _as_logits(output: torch.Tensor) -> torch.Tensor:
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise TargetError(
            f"the model output has shape {shape}, not (N, classes); pass a Neuron or a callable target"
        )
    return output


def _neuron_scores(act: torch.Tensor, neuron: Neuron) -> torch.Tensor:
    if act.dim() < 2 or not 0 <= neuron.channel < act.shape[1]:
        raise TargetError(
            f"channel {neuron.channel} is out of range for layer {neuron.layer!r} with output shape {tuple(act.shape[1:])}"
        )
    unit = act[:, neuron.channel]
    if neuron.y is None or act.dim() == 2:
        return unit.reshape(act.shape[0], -1).mean(dim=1)
    h, w = act.shape[-2:]
    if not (0 <= neuron.y < h and 0 <= (neuron.x or 0) < w):
        raise TargetError(
            f"position ({neuron.y}, {neuron.x}) is outside layer {neuron.layer!r} of size {h}x{w}"
        )
    return unit[:, neuron.y, neuron.x or 0]


def resolve_target(model: Model, target: TargetLike, batch_size: int | None = None) -> Target:
    """Turn any accepted target into a :class:`Target` (see the module docstring)."""
    if target is None:
        return Target("predicted")
    if isinstance(target, Target):
        return target
    if isinstance(target, Neuron):
        model.layer(target.layer)  # fail early with "did you mean"
        return Target("neuron", neuron=target)
    if isinstance(target, bool):
        raise TargetError(
            f"target {target!r} is a bool; pass a class index, label, wnid, Neuron or callable"
        )
    if isinstance(target, int):
        return Target("class", classes=torch.tensor([_resolve_class(model, target)]))
    if isinstance(target, str):
        if ":" in target and not target.startswith("n0"):
            neuron = Neuron.parse(target)
            model.layer(neuron.layer)
            return Target("neuron", neuron=neuron)
        return Target("class", classes=torch.tensor([_resolve_class(model, target)]))
    if isinstance(target, torch.Tensor):
        if target.dtype.is_floating_point or target.dim() > 1:
            raise TargetError(
                f"a tensor target must be a 1-D tensor of class indices, got dtype {target.dtype} and shape {tuple(target.shape)}"
            )
        classes = target.reshape(-1).long().cpu()
    elif callable(target):
        bind = getattr(target, "bind", None)
        return Target("callable", fn=bind(model) if callable(bind) else target)
    elif isinstance(target, Sequence):
        classes = torch.tensor([_resolve_class(model, t) for t in target], dtype=torch.long)
    else:
        raise TargetError(
            f"cannot use a {type(target).__name__} as a target; pass a class index, label, wnid, Neuron or callable"
        )
    if batch_size is not None and classes.numel() not in (1, batch_size):
        raise TargetError(
            f"target has {classes.numel()} entries but x has batch size {batch_size}; pass one class or {batch_size} classes"
        )
    return Target("class", classes=classes)


def _resolve_class(model: Model, key: int | str) -> int:
    if model.labels is not None:
        return model.labels.resolve(key)
    if isinstance(key, int) or str(key).strip().isdigit():
        return int(key)
    raise TargetError(
        f"the model has no class labels, so the class {key!r} must be given as an index"
    )


# -- ready-made callable targets for dense outputs -----------------------------------------

MaskLike = torch.Tensor | np.ndarray | str | os.PathLike[str]


def load_mask(source: MaskLike) -> torch.Tensor:
    """A mask as a bool tensor ``(H, W)`` or ``(N, H, W)``: non-zero is inside.

    ``source`` is a tensor or array (bool, int or float; non-zero = in the mask) or the path
    of an image file (PNG ...): a pixel is inside when any colour channel is non-zero (an
    alpha channel is ignored), so a black-and-white or a coloured mask on black both work.

    Raises
    ------
    BadInputError
        The file is missing or not an image, or the array is not 2-D / 3-D.
    """
    if isinstance(source, (str, os.PathLike)):
        from PIL import Image, UnidentifiedImageError

        path = Path(source)
        if not path.is_file():
            raise BadInputError(f"mask {path}: no such file")
        try:
            with Image.open(path) as img:
                img.load()
                bands = [b for b, name in zip(img.split(), img.getbands()) if name != "A"]
                array = np.stack([np.asarray(b) for b in bands]).astype(bool).any(axis=0)
        except (UnidentifiedImageError, OSError) as exc:
            raise BadInputError(f"mask {path}: not an image file ({exc})") from None
        return torch.from_numpy(array)
    if isinstance(source, np.ndarray):
        source = torch.from_numpy(np.ascontiguousarray(source))
    if not isinstance(source, torch.Tensor):
        raise BadInputError(
            f"a mask must be a tensor, an array or an image path, not a {type(source).__name__}"
        )
    if source.dim() not in (2, 3):
        raise BadInputError(
            f"a mask must have shape (H, W) or (N, H, W), not {tuple(source.shape)}"
        )
    return (source != 0).detach().cpu()


def _resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of a bool mask ``(H, W)`` / ``(N, H, W)`` to ``size``.

    ``nearest-exact`` samples each output pixel at its centre, so shrinking by an integer
    factor picks the middle of each block rather than its top-left corner (``nearest``)."""
    if tuple(mask.shape[-2:]) == size:
        return mask
    m = mask.float().reshape(-1, 1, *mask.shape[-2:])
    out = F.interpolate(m, size=size, mode="nearest-exact") > 0.5
    return out.reshape(*mask.shape[:-2], *size)


def _check_scores(scores: torch.Tensor, output_n: int, what: str) -> torch.Tensor:
    if scores.shape != (output_n,):
        raise TargetError(
            f"{what} gave scores of shape {tuple(scores.shape)}, expected ({output_n},)"
        )
    return scores


class Region:
    """Sum of one class's logits over a mask, for segmentation outputs ``(N, classes, H, W)``.

    ``score_n = sum_{(y, x) in M} z_n[c, y, x]`` where ``z`` is the model output, ``c`` the
    class and ``M`` the mask. A **sum**, not a mean (as in pytorch-grad-cam's semantic
    segmentation target): a bigger region gives a bigger score, which scales every gradient
    map by the same factor and leaves its shape unchanged. Build it with :func:`region`.
    """

    def __init__(self, class_index: int | str, mask: MaskLike, *, label: str | None = None) -> None:
        if isinstance(class_index, bool) or not isinstance(class_index, (int, str)):
            raise TargetError(f"region class {class_index!r} must be an index or a label")
        self.class_index = class_index
        self.label = label
        self.mask = load_mask(mask)
        if not bool(self.mask.any()):
            raise TargetError(
                f"region mask of shape {tuple(self.mask.shape)} has no pixel inside; mark the region with non-zero values"
            )

    def bind(self, model: Model) -> Region:
        """Resolve a class given by name through the model's labels (and name an index)."""
        index = (
            _resolve_class(model, self.class_index)
            if isinstance(self.class_index, str)
            else self.class_index
        )
        labels = model.labels
        label = labels.name(index) if labels is not None and 0 <= index < len(labels) else None
        return Region(index, self.mask, label=label)

    def _index(self) -> int:
        if isinstance(self.class_index, int):
            return self.class_index
        if self.class_index.strip().isdigit():
            return int(self.class_index)
        raise TargetError(
            f"region class {self.class_index!r} is a name: resolve it with the model (explain/resolve_target do, or call .bind(model))"
        )

    def __call__(self, output: Any) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            shape = (
                tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            )
            raise TargetError(
                f"a region target needs a segmentation output (N, classes, H, W); the model gives {shape}"
            )
        n, classes, h, w = output.shape
        c = self._index()
        if not 0 <= c < classes:
            raise TargetError(
                f"region class {c} is out of range: the model output has {classes} classes"
            )
        mask = _resize_mask(self.mask, (h, w)).to(output.device)
        if mask.dim() == 3 and mask.shape[0] not in (1, n):
            raise TargetError(
                f"region has {mask.shape[0]} masks but the output has batch size {n}; pass one (H, W) mask or {n} masks"
            )
        if not bool(mask.reshape(-1, h * w).any(dim=1).all()):
            raise TargetError(
                f"the region mask has no pixel left after resizing it to the output's {h}x{w}; use a larger mask"
            )
        return _check_scores((output[:, c] * mask.to(output.dtype)).sum(dim=(1, 2)), n, "region")

    def pixels(self) -> list[int]:
        """Pixels inside each mask (one number per mask)."""
        return [int(v) for v in self.mask.reshape(-1, *self.mask.shape[-2:]).sum(dim=(1, 2))]

    def describe(self) -> str:
        name = (
            f"{self.class_index} ({self.label})"
            if self.label and self.label != str(self.class_index)
            else str(self.class_index)
        )
        counts = self.pixels()
        px = (
            f"{counts[0]} px"
            if len(counts) == 1
            else f"{len(counts)} masks, {min(counts)}-{max(counts)} px"
        )
        h, w = self.mask.shape[-2:]
        return f"region(class={name}, mask={px} of {h}x{w})"

    def to_dict(self) -> dict[str, object]:
        return {
            "name": "region",
            "class": self.class_index,
            "label": self.label,
            "mask_size": list(self.mask.shape[-2:]),
            "mask_pixels": self.pixels(),
            "reduction": "sum",
        }


def region(class_index: int | str, mask: MaskLike) -> Region:
    """Target: the sum of a class's logits over a mask (semantic segmentation).

    Parameters
    ----------
    class_index
        The class: an index, or a label resolved through the model's labels when the
        target is resolved (``explain`` and the CLI do this).
    mask
        Bool / int / float tensor or array ``(H, W)`` (one mask for every image) or
        ``(N, H, W)`` (one per image), or the path of a PNG; non-zero is inside. When its
        size differs from the output's ``(H, W)`` it is resized with nearest-neighbour
        sampling (``nearest-exact``), so give it in the coordinates of the model input.

    Returns
    -------
    Region
        A callable ``output (N, classes, H, W) -> (N,)``: ``sum over the mask of output[:, class]``.

    Raises
    ------
    TargetError
        The mask is empty; when scoring: the output is not 4-D, the class is out of range,
        the number of masks differs from the batch, or the mask vanishes when resized.

    Example
    -------
    >>> convlens.explain(seg_model, image, "gradcam", region("square", square_mask))  # doctest: +SKIP
    """
    return Region(class_index, mask)


class Box:
    """A detector's score for one box. Build it with :func:`box`.

    Accepted outputs (anything else is a :class:`TargetError`):

    - a tensor ``(N, boxes, 4 + K)``: per box 4 coordinates then K class scores; the score
      is column ``4 + class_index``, or the largest of the K when ``class_index`` is None;
    - a mapping with ``"scores"``: ``(N, boxes)`` (one score per box) or ``(N, boxes, K)``
      (per class, chosen as above);
    - a list of mappings, one per image, with ``"scores"`` ``(boxes_i,)`` (torchvision's
      detectors in eval mode); with ``class_index`` and a ``"labels"`` entry, the box's label
      must be that class.
    """

    def __init__(self, index: int, class_index: int | None = None) -> None:
        for name, value in (("index", index), ("class_index", class_index)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise TargetError(f"box {name}={value!r} must be an int >= 0")
        self.index = index
        self.class_index = class_index

    def __call__(self, output: Any) -> torch.Tensor:
        if isinstance(output, torch.Tensor):
            if output.dim() != 3 or output.shape[2] < 5:
                raise TargetError(
                    f"a box target needs detections (N, boxes, 4 + classes), a dict with 'scores' or a list of dicts; the model gives {tuple(output.shape)}"
                )
            return self._per_class(output[:, :, 4:], "columns after the 4 box coordinates")
        if isinstance(output, Mapping) and "scores" in output:
            scores = output["scores"]
            if isinstance(scores, torch.Tensor) and scores.dim() == 2:
                self._check_index(scores.shape[1])
                return scores[:, self.index]
            if isinstance(scores, torch.Tensor) and scores.dim() == 3:
                return self._per_class(scores, "class scores")
            raise TargetError(
                f"a box target needs output['scores'] of shape (N, boxes) or (N, boxes, classes), not {_shape(scores)}"
            )
        if (
            isinstance(output, (list, tuple))
            and output
            and all(isinstance(d, Mapping) and "scores" in d for d in output)
        ):
            return torch.stack([self._one_image(i, d) for i, d in enumerate(output)])
        raise TargetError(
            f"a box target needs detections (N, boxes, 4 + classes), a dict with 'scores' or a list of dicts with 'scores'; the model gives {_shape(output)}"
        )

    def _check_index(self, boxes: int, image: int | None = None) -> None:
        if self.index >= boxes:
            where = f"image {image} has" if image is not None else "the output has"
            raise TargetError(f"box {self.index} does not exist: {where} {boxes} boxes")

    def _per_class(self, scores: torch.Tensor, what: str) -> torch.Tensor:
        self._check_index(scores.shape[1])
        row = scores[:, self.index]
        if self.class_index is None:
            return row.max(dim=1).values
        if self.class_index >= row.shape[1]:
            raise TargetError(
                f"box class {self.class_index} is out of range: the output has {row.shape[1]} {what}"
            )
        return row[:, self.class_index]

    def _one_image(self, i: int, detections: Mapping[str, Any]) -> torch.Tensor:
        scores = detections["scores"]
        if not isinstance(scores, torch.Tensor) or scores.dim() != 1:
            raise TargetError(
                f"image {i}: a box target needs 'scores' of shape (boxes,), not {_shape(scores)}"
            )
        self._check_index(scores.shape[0], i)
        labels = detections.get("labels")
        if (
            self.class_index is not None
            and isinstance(labels, torch.Tensor)
            and int(labels[self.index]) != self.class_index
        ):
            raise TargetError(
                f"image {i}: box {self.index} is labelled {int(labels[self.index])}, not {self.class_index}"
            )
        return scores[self.index]

    def describe(self) -> str:
        cls = f", class={self.class_index}" if self.class_index is not None else ""
        return f"box(index={self.index}{cls})"

    def to_dict(self) -> dict[str, object]:
        return {"name": "box", "index": self.index, "class": self.class_index}


def box(index: int, class_index: int | None = None) -> Box:
    """Target: a detector's score for box ``index`` (see :class:`Box` for the outputs it reads).

    Parameters
    ----------
    index
        Which box (row) of each image's detections.
    class_index
        For outputs with per-class scores: the class column (default: the box's best class).
        For a list of torchvision-style dicts: the label the box must have.

    Returns
    -------
    Box
        A callable ``output -> (N,)``.
    """
    return Box(index, class_index)


def _shape(value: Any) -> object:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


class Similarity:
    """Cosine similarity of the model's embedding to a reference. Build it with :func:`similarity`.

    ``score_n = <e_n, r> / max(|e_n| |r|, eps)`` with ``e_n`` the output of image ``n``
    flattened to ``(D,)`` and ``r`` the reference embedding.
    """

    def __init__(self, reference: Any, *, eps: float = 1e-8, source: str | None = None) -> None:
        self.eps = eps
        self.embedding: torch.Tensor | None = None
        self.image: Any = None
        self.source = source
        if _is_embedding(reference):
            emb = torch.as_tensor(reference).detach()
            self.embedding = emb.reshape(1, -1) if emb.dim() == 1 else emb
            self.source = (
                source or f"embedding ({self.embedding.shape[0]}, {self.embedding.shape[1]})"
            )
        else:
            self.image = reference
            self.source = source or (
                str(reference)
                if isinstance(reference, (str, os.PathLike))
                else f"<{type(reference).__name__}>"
            )

    def bind(self, model: Model) -> Similarity:
        """Embed a reference image with ``model`` (eval mode, no gradient)."""
        if self.embedding is not None:
            return self
        batch = model.prepare(
            self.image
            if isinstance(self.image, torch.Tensor) and self.image.dim() == 4
            else [self.image]
        )
        if len(batch) != 1:
            raise TargetError(f"similarity takes one reference image, got {len(batch)}")
        with eval_mode(model.module), torch.no_grad():
            emb = model.module(batch.x)
        if not isinstance(emb, torch.Tensor):
            raise TargetError(
                f"a similarity target needs a tensor embedding (N, D) from the model; it gives {_shape(emb)}"
            )
        return Similarity(emb.flatten(1).detach(), eps=self.eps, source=self.source)

    def __call__(self, output: Any) -> torch.Tensor:
        if self.embedding is None:
            raise TargetError(
                f"similarity to the image {self.source} needs the model to embed it: resolve the target with the model (explain/resolve_target do, or call .bind(model))"
            )
        if not isinstance(output, torch.Tensor) or output.dim() < 2:
            raise TargetError(
                f"a similarity target needs an embedding output (N, D); the model gives {_shape(output)}"
            )
        e = output.flatten(1)
        r = self.embedding.to(e.device, e.dtype)
        if r.shape[1] != e.shape[1]:
            raise TargetError(
                f"the reference embedding has {r.shape[1]} values but the model's embedding has {e.shape[1]}"
            )
        if r.shape[0] not in (1, e.shape[0]):
            raise TargetError(
                f"similarity has {r.shape[0]} reference embeddings but the output has batch size {e.shape[0]}; pass one or {e.shape[0]}"
            )
        cos = (e * r).sum(dim=1) / (e.norm(dim=1) * r.norm(dim=1)).clamp_min(self.eps)
        return _check_scores(cos, e.shape[0], "similarity")

    def describe(self) -> str:
        return f"similarity(reference={self.source})"

    def to_dict(self) -> dict[str, object]:
        dim = int(self.embedding.shape[1]) if self.embedding is not None else None
        return {"name": "similarity", "reference": self.source, "dim": dim, "measure": "cosine"}


def _is_embedding(reference: Any) -> bool:
    """1-D / 2-D float tensors and 1-D arrays are embeddings; images are paths, PIL images,
    ``(H, W[, C])`` arrays or ``(C, H, W)`` / ``(1, C, H, W)`` tensors."""
    if isinstance(reference, torch.Tensor):
        return reference.dim() in (1, 2) and reference.dtype.is_floating_point
    if isinstance(reference, np.ndarray):
        return (
            reference.ndim == 1
        )  # a 2-D array is a grey image; pass (N, D) embeddings as a tensor
    return False


def similarity(reference: Any, *, eps: float = 1e-8, name: str | None = None) -> Similarity:
    """Target: cosine similarity of the model's output (an embedding) to a reference.

    Parameters
    ----------
    reference
        A reference embedding, a float tensor ``(D,)`` / ``(1, D)`` or ``(N, D)`` (one per
        image; a 1-D array also works), or a reference image (path, ``sample:NAME``, PIL image, array, a pixel
        tensor ``(C, H, W)`` or ``(1, C, H, W)``), which is embedded with the model when the
        target is resolved. The model's output ``(N, D, ...)`` is flattened to ``(N, D')``.
    eps
        Lower bound of the product of norms (a zero embedding scores 0, not NaN).
    name
        How provenance and pictures name the reference (default: its path, or its type).

    Returns
    -------
    Similarity
        A callable ``output -> (N,)``: ``cos(output_n, reference)``.

    Notes
    -----
    At an image whose embedding points the same way as the reference (e.g. the reference
    itself) the cosine is at its maximum 1, so its gradient is zero.
    """
    return Similarity(reference, eps=eps, source=name)
