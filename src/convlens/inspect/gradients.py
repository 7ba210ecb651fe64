"""Gradients: of the loss w.r.t. every layer, and of a layer or neuron w.r.t. the input.

The two views the course notes contrast: ``dL/dh_l`` for every layer ``l`` (how strongly
the loss reacts to each layer's activity, and where), and ``ds/dx`` for a chosen score
``s`` (a class logit or one neuron) - the raw material of saliency maps (Simonyan et al.,
"Deep Inside Convolutional Networks", 2013, arXiv:1312.6034).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from convlens.errors import BadInputError
from convlens.hooks import capture, inference_context
from convlens.models.model import Batch, Model
from convlens.models.preprocess import map_to_original
from convlens.results import Result, make_provenance
from convlens.targets import Target, TargetLike, resolve_target

__all__ = ["gradients", "input_gradient", "loss_layer_gradients"]


def input_gradient(model: Model, x: torch.Tensor, target: TargetLike = None) -> torch.Tensor:
    """``d S / d x`` for an input-space batch, one score ``S`` per image.

    The one input gradient of convlens: the saliency of Simonyan, Vedaldi & Zisserman
    ("Deep Inside Convolutional Networks", 2014, arXiv:1312.6034) and the first step of the
    gradient attributions (saliency, gradient x input, guided backprop and deconvnet under
    their backward rules, layer/neuron gradients, segmentation seeds), which call it.

    ``target``: class index/label (``S`` the logit), ``Neuron``, callable or None (the
    predicted class). Eval mode, parameters frozen; ``x`` is not modified and gains no
    ``.grad``; works inside a caller's ``torch.no_grad()`` (as Captum does).
    """
    resolved = resolve_target(model, target, x.shape[0])
    xr = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), inference_context(model.module):  # also inside a caller's no_grad
        scores, _ = resolved.scores(model, xr)
        (grad,) = torch.autograd.grad(scores.sum(), xr)
    return grad


def loss_layer_gradients(
    model: Model, x: torch.Tensor, target: TargetLike = None, layers: Sequence[str] | None = None
) -> tuple[dict[str, torch.Tensor], Target]:
    """``dL/dh`` for each layer output ``h``, where ``L`` is the cross-entropy of each image
    against its target class (default: the predicted class).

    The loss is summed over the batch, so each image's gradients are its own loss's.
    Layers default to every leaf layer that runs once and returns a tensor.
    """
    if layers is None:
        layers = [r.name for r in model.layers() if r.is_leaf and r.calls == 1 and r.output_shape]
    resolved = resolve_target(model, target, x.shape[0])
    if resolved.kind not in ("class", "predicted"):
        raise BadInputError(
            "the loss gradient needs a class target (cross-entropy), not a neuron or callable"
        )
    xr = x.detach().clone().requires_grad_(True)
    with (
        torch.enable_grad(),
        inference_context(model.module),
        capture(model.module, layers) as acts,
    ):
        logits = model.module(xr)
        _, resolved = resolved.scores_from_logits(logits)
        assert resolved.classes is not None
        loss = F.cross_entropy(logits, resolved.classes.to(logits.device), reduction="sum")
        outputs = [acts[name] for name in layers]
        grads = torch.autograd.grad(loss, outputs, allow_unused=True)
    return {
        name: (g if g is not None else torch.zeros_like(o)).detach()
        for name, o, g in zip(layers, outputs, grads)
    }, resolved


def gradients(
    model: Model,
    images: Any,
    target: TargetLike = None,
    *,
    input_target: TargetLike = None,
    layers: Sequence[str] | None = None,
    map_layers: int = 4,
) -> Result:
    """Both gradient views for images.

    Parameters
    ----------
    target
        Class for the cross-entropy loss (default: predicted class).
    input_target
        The score whose gradient w.r.t. the input is shown: a ``Neuron`` / ``"layer:c[:y:x]"``,
        a class, or None (the loss target's class logit).
    map_layers
        How many layers (spread over the depth) get a spatial gradient map.

    Returns
    -------
    Result
        Kind ``"gradients"``: ``layer_norms`` ``(N, L)`` (L2 norm of ``dL/dh`` per layer,
        names in ``provenance["params"]["layers"]``), ``maps/<layer>`` ``(N, h, w)``
        (sum over channels of ``|dL/dh|``), ``input_gradient`` ``(N, C, H, W)``; the
        display map is ``|ds/dx|`` summed over channels on the original image.
    """
    batch = (
        images
        if isinstance(images, Batch)
        else model.prepare(
            images if isinstance(images, Sequence) and not isinstance(images, str) else [images]
        )
    )
    grads, resolved = loss_layer_gradients(model, batch.x, target, layers)
    names = list(grads)
    norms = torch.stack([grads[n].flatten(1).norm(dim=1) for n in names], dim=1)
    spatial = [n for n in names if grads[n].dim() == 4 and min(grads[n].shape[-2:]) > 1]
    picks = (
        sorted(
            {
                spatial[round(i * (len(spatial) - 1) / max(1, map_layers - 1))]
                for i in range(map_layers)
            },
            key=spatial.index,
        )
        if spatial and map_layers > 0
        else []
    )
    tensors: dict[str, torch.Tensor] = {"layer_norms": norms}
    for n in picks:
        tensors[f"maps/{n}"] = grads[n].abs().sum(dim=1)
    if input_target is None:
        input_target = resolved
    grad_x = input_gradient(model, batch.x, input_target)
    tensors["input_gradient"] = grad_x
    display = [
        map_to_original(grad_x[i].abs().sum(0).float().cpu(), g)
        for i, g in enumerate(batch.geometries)
    ]
    in_resolved = resolve_target(model, input_target, batch.x.shape[0])
    provenance = make_provenance(
        model,
        "gradients",
        params={
            "layers": names,
            "map_layers": picks,
            "input_target": in_resolved.to_dict(),
            "loss": "cross_entropy",
        },
        target=resolved,
    )
    return Result(
        "gradients",
        tensors,
        provenance,
        sources=batch.sources,
        display=display,
        originals=batch.originals,
    )
