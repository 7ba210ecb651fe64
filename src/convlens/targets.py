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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from convlens.errors import TargetError
from convlens.hooks import capture

if TYPE_CHECKING:
    from convlens.models.model import Model

__all__ = ["Neuron", "Target", "TargetLike", "resolve_target"]


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
            raise TargetError(f"neuron {text!r} is not of the form layer:channel or layer:channel:y:x (e.g. blocks.5:12 or blocks.5:12:7:7)")
        numbers = [int(p) for p in parts[1:]]
        return cls(parts[0], *numbers)

    def describe(self) -> str:
        where = f"[{self.y},{self.x}]" if self.y is not None else " (spatial mean)"
        return f"{self.layer} channel {self.channel}{where}"


TargetLike = int | str | Sequence[int] | torch.Tensor | Neuron | Callable[[torch.Tensor], torch.Tensor] | None


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
        return getattr(self.fn, "__name__", "callable")

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"kind": self.kind}
        if self.classes is not None:
            d["classes"] = self.classes.tolist()
        if self.neuron is not None:
            d["neuron"] = {"layer": self.neuron.layer, "channel": self.neuron.channel, "y": self.neuron.y, "x": self.neuron.x}
        if self.fn is not None:
            d["callable"] = getattr(self.fn, "__qualname__", repr(self.fn))
        return d

    def scores(self, model: Model, x: torch.Tensor) -> tuple[torch.Tensor, Target]:
        """Forward ``x`` (input space) and return ``(scores (N,), target)``.

        For the predicted-class target, the returned target has ``classes`` filled in.
        """
        n = x.shape[0]
        if self.kind == "neuron":
            assert self.neuron is not None
            neuron = self.neuron
            with capture(model.module, [neuron.layer]) as acts:
                model.module(x)
            act = acts[neuron.layer]
            return _neuron_scores(act, neuron), self
        output = model.module(x)
        if self.kind == "callable":
            assert self.fn is not None
            scores = self.fn(output)
            if not isinstance(scores, torch.Tensor) or scores.shape != (n,):
                got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
                raise TargetError(f"target callable must return a tensor of shape ({n},), one score per image; it returned {got}")
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
                raise TargetError(f"target has {classes.shape[0]} entries but x has batch size {n}; pass one class or {n} classes")
            if int(classes.max()) >= logits.shape[1] or int(classes.min()) < 0:
                raise TargetError(f"class index {int(classes.max())} is out of range: the model has {logits.shape[1]} outputs")
            target = Target("class", classes=classes)
        return logits.gather(1, classes.view(-1, 1)).squeeze(1), target


def _as_logits(output: torch.Tensor) -> torch.Tensor:
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise TargetError(f"the model output has shape {shape}, not (N, classes); pass a Neuron or a callable target")
    return output


def _neuron_scores(act: torch.Tensor, neuron: Neuron) -> torch.Tensor:
    if act.dim() < 2 or not 0 <= neuron.channel < act.shape[1]:
        raise TargetError(f"channel {neuron.channel} is out of range for layer {neuron.layer!r} with output shape {tuple(act.shape[1:])}")
    unit = act[:, neuron.channel]
    if neuron.y is None or act.dim() == 2:
        return unit.reshape(act.shape[0], -1).mean(dim=1)
    h, w = act.shape[-2:]
    if not (0 <= neuron.y < h and 0 <= (neuron.x or 0) < w):
        raise TargetError(f"position ({neuron.y}, {neuron.x}) is outside layer {neuron.layer!r} of size {h}x{w}")
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
        raise TargetError(f"target {target!r} is a bool; pass a class index, label, wnid, Neuron or callable")
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
            raise TargetError(f"a tensor target must be a 1-D tensor of class indices, got dtype {target.dtype} and shape {tuple(target.shape)}")
        classes = target.reshape(-1).long().cpu()
    elif callable(target):
        return Target("callable", fn=target)
    elif isinstance(target, Sequence):
        classes = torch.tensor([_resolve_class(model, t) for t in target], dtype=torch.long)
    else:
        raise TargetError(f"cannot use a {type(target).__name__} as a target; pass a class index, label, wnid, Neuron or callable")
    if batch_size is not None and classes.numel() not in (1, batch_size):
        raise TargetError(f"target has {classes.numel()} entries but x has batch size {batch_size}; pass one class or {batch_size} classes")
    return Target("class", classes=classes)


def _resolve_class(model: Model, key: int | str) -> int:
    if model.labels is not None:
        return model.labels.resolve(key)
    if isinstance(key, int) or str(key).strip().isdigit():
        return int(key)
    raise TargetError(f"the model has no class labels, so the class {key!r} must be given as an index")
