"""Class, neuron and layer visualisation: images a network responds to most.

Each function builds an objective and runs :func:`~convlens.optimize.engine.optimize`
with settings that give recognisable pictures in few steps (decorrelated Fourier
parameterisation, jitter/scale/rotation, Adam at lr 0.05), and returns its
:class:`~convlens.results.Result`. Extra keyword arguments go to the engine
(``blur_every``, ``snapshot_every``, ``progress``, ``image_size``, ...).

- :func:`visualize_class`: an image classified as a class (Simonyan, Vedaldi & Zisserman
  2013, arXiv:1312.6034; Olah et al. 2017, Distill), checked on its 8-bit version.
- :func:`visualize_neuron`: what one unit or channel wants to see, optionally several
  diverse images.
- :func:`visualize_layer`: one image per channel of a layer, in one batched optimisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from convlens.errors import BadInputError, TargetError
from convlens.optimize import objectives as obj
from convlens.optimize.engine import optimize
from convlens.optimize.param import ImageParam
from convlens.results import Result
from convlens.types import ModelProtocol

__all__ = ["visualize_class", "visualize_layer", "visualize_neuron"]

#: steps of the visualisations: 10/10 random ImageNet classes reach top-1 on Lite0 in 64
DEFAULT_STEPS = 128


def _resolve_class(model: ModelProtocol, cls: int | str) -> int:
    if model.labels is not None:
        return int(model.labels.resolve(cls))
    if isinstance(cls, bool) or (
        not isinstance(cls, int) and not (isinstance(cls, str) and cls.strip().isdigit())
    ):
        raise TargetError(f"class {cls!r}: this model has no labels, pass a class index")
    return int(cls)


def visualize_class(
    model: ModelProtocol,
    cls: int | str | Sequence[int | str],
    *,
    steps: int = DEFAULT_STEPS,
    param: str | ImageParam = "fourier",
    batch: int = 1,
    seed: int = 0,
    lr: float = 0.05,
    l2_weight: float = 0.0,
    tv_weight: float = 0.0,
    **options: Any,
) -> Result:
    """An image the model classifies as ``cls``: ascend its raw logit.

    Parameters
    ----------
    model
        A convlens ``Model`` with class outputs.
    cls
        A class index, label or wnid; or a list of them (one image per class, optimised
        together).
    steps, param, batch, seed, lr
        See :func:`~convlens.optimize.engine.optimize` (``batch`` images per class when
        ``cls`` is one class).
    l2_weight, tv_weight
        Weights of the :func:`~convlens.optimize.objectives.l2` and
        :func:`~convlens.optimize.objectives.total_variation` regularisers (0 = off).

    Returns
    -------
    Result
        The engine's result, plus tensors ``target (B,)``, ``top1 (B,)``,
        ``top1_probability (B,)`` and ``target_probability (B,)`` measured on the 8-bit
        quantised final images (what a saved PNG gives back); provenance ``target``,
        ``top1`` and ``success`` (every image's top-1 is its target).

    Examples
    --------
    >>> result = visualize_class(model, "goldfish")
    >>> result.provenance["top1"][0]["label"]
    'goldfish'
    """
    from convlens.data.images import quantize_8bit

    many = isinstance(cls, (list, tuple))
    given: list[int | str] = list(cls) if isinstance(cls, (list, tuple)) else [cls]  # type: ignore[list-item]
    classes = [_resolve_class(model, c) for c in given]
    if not classes:
        raise BadInputError("visualize_class got an empty list of classes")
    if many and batch != 1:
        raise BadInputError(f"pass either a list of classes or batch={batch}, not both")
    targets = classes if many else classes * batch
    objective = obj.class_score(targets if len(targets) > 1 else targets[0])
    if l2_weight:
        objective = objective - l2_weight * obj.l2()
    if tv_weight:
        objective = objective - tv_weight * obj.total_variation()
    result = optimize(
        model, objective, param, steps=steps, lr=lr, batch=len(targets), generator=seed, **options
    )

    image = result["image"]
    with torch.no_grad():
        probs = model.logits(model.normalize(quantize_8bit(image))).double().softmax(dim=1)
    target = torch.tensor(targets)
    top_p, top1 = probs.max(dim=1)
    target_p = probs.gather(1, target[:, None].to(probs.device))[:, 0]
    result.tensors.update(
        {
            "target": target,
            "top1": top1.cpu(),
            "top1_probability": top_p.cpu(),
            "target_probability": target_p.cpu(),
        }
    )

    def name(i: int) -> str:
        return model.labels.name(i) if model.labels is not None else str(i)

    result.provenance["method"] = "visualize_class"
    result.provenance["target"] = [{"class": t, "label": name(t)} for t in targets]
    result.provenance["top1"] = [
        {
            "class": int(c),
            "label": name(int(c)),
            "probability": float(p),
            "target_probability": float(tp),
        }
        for c, p, tp in zip(top1.tolist(), top_p.tolist(), target_p.tolist())
    ]
    result.provenance["success"] = bool((top1.cpu() == target).all())
    result.sources = [f"<class {t} ({name(t)})>" for t in targets]
    return result


def visualize_neuron(
    model: ModelProtocol,
    layer: str,
    channel: int,
    y: int | None = None,
    x: int | None = None,
    *,
    diversity: float = 0.0,
    diversity_layer: str | None = None,
    batch: int = 1,
    steps: int = DEFAULT_STEPS,
    param: str | ImageParam = "fourier",
    seed: int = 0,
    lr: float = 0.05,
    **options: Any,
) -> Result:
    """What a unit (``y``, ``x`` given) or a whole channel (spatial mean) responds to.

    Parameters
    ----------
    layer, channel, y, x
        The neuron, as :class:`convlens.targets.Neuron`: with ``y`` and ``x`` one unit
        (:func:`~convlens.optimize.objectives.neuron`), without them the channel's spatial
        mean (:func:`~convlens.optimize.objectives.channel`).
    diversity
        Weight of the :func:`~convlens.optimize.objectives.diversity` term (0 = off); with
        ``batch`` K >= 2 images it pushes them to show different facets of the neuron.
    diversity_layer
        Layer whose Gram matrices are compared (default ``layer``).

    Returns
    -------
    Result
        The engine's result (``image (batch, C, H, W)``).

    Examples
    --------
    >>> result = visualize_neuron(model, "blocks.10", 7, diversity=1.0, batch=4)
    """
    if (y is None) != (x is None):
        raise BadInputError(
            "give both y and x for a unit, or neither for the channel's spatial mean"
        )
    if not diversity >= 0:
        raise BadInputError(f"diversity is a weight >= 0, got {diversity}")
    if diversity and batch < 2:
        raise BadInputError(f"diversity compares images of a batch; pass batch >= 2 (got {batch})")
    objective = obj.channel(layer, channel) if y is None else obj.neuron(layer, channel, y, x)
    if diversity:
        objective = objective + diversity * obj.diversity(diversity_layer or layer)
    result = optimize(
        model, objective, param, steps=steps, lr=lr, batch=batch, generator=seed, **options
    )
    result.provenance["method"] = "visualize_neuron"
    result.provenance["target"] = {"layer": layer, "channel": channel, "y": y, "x": x}
    return result


def visualize_layer(
    model: ModelProtocol,
    layer: str,
    channels: Sequence[int] | range = range(16),
    *,
    steps: int = DEFAULT_STEPS,
    param: str | ImageParam = "fourier",
    seed: int = 0,
    lr: float = 0.05,
    **options: Any,
) -> Result:
    """One image per channel of ``layer``, all in one batched optimisation.

    Image ``b`` maximises the spatial mean of channel ``channels[b]`` (a per-image
    :func:`~convlens.optimize.objectives.channel` objective), so a layer costs one run of
    ``steps`` on a batch rather than one run per channel.

    Returns
    -------
    Result
        The engine's result, ``image (len(channels), C, H, W)``, and tensor ``channels``.

    Examples
    --------
    >>> grid = visualize_layer(model, "blocks.3", range(8))
    """
    chosen = list(channels)
    if not chosen:
        raise BadInputError("visualize_layer got no channels; pass e.g. range(16)")
    if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in chosen):
        raise BadInputError(f"channels must be whole numbers >= 0, got {chosen!r}")
    objective = obj.channel(layer, chosen)
    result = optimize(
        model, objective, param, steps=steps, lr=lr, batch=len(chosen), generator=seed, **options
    )
    result.tensors["channels"] = torch.tensor(chosen)
    result.provenance["method"] = "visualize_layer"
    result.provenance["target"] = {"layer": layer, "channels": chosen}
    result.sources = [f"<{layer} channel {c}>" for c in chosen]
    return result
