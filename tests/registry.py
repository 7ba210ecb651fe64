"""Every public method, with minimal valid arguments, for the shared invariants.

A method joins by adding one :class:`MethodCase` here; ``tests/test_registry_invariants.py``
then checks it (STYLE.md 3.8): no hooks left (also after an exception), model unchanged,
input unchanged, in-place activations = out-of-place, a reused named layer is refused,
batch = items one by one, seeded repeatability, output shape/dtype/device.

``run(model, x, layer, generator)`` takes a convlens ``Model`` (a tiny net from
``tests/helpers/tiny.py``), an input-space batch and, for layer methods, a layer name; it
returns a tensor whose first dimension is the batch. ``net`` names the tiny network the
invariants run on (:data:`NETS`): ``"conv"`` (``TinyConvNet``, the default) or ``"vit"``
(``TinyViT``, a vision transformer: attention methods, CAMs on token layers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from convlens.inspect import input_gradient, layer_activations, loss_layer_gradients

from helpers.tiny import TinyConvNet
from helpers.tiny_vit import TinyViT

#: the tiny networks a case can run on: factory(inplace=..., seed=...), 3x16x16 input, 5 classes
NETS: dict[str, Callable[..., torch.nn.Module]] = {"conv": TinyConvNet, "vit": TinyViT}


@dataclass(frozen=True)
class MethodCase:
    name: str
    run: Callable[[object, torch.Tensor, str | None, torch.Generator], torch.Tensor]
    layer: str | None = None  # the layer a layer method is called with on TinyConvNet
    shape: Callable[[torch.Tensor], tuple[int, ...]] | None = None  # expected output shape for x
    atol: float = 1e-5
    net: str = "conv"  # a key of NETS


def _stack_layer_grads(model, x, layer, g):  # type: ignore[no-untyped-def]
    grads, _ = loss_layer_gradients(model, x, 1, [layer])
    return grads[layer]


# Minimal options per attribution method for the invariants (one line per method that needs any).
ATTRIBUTION_OPTIONS: dict[str, dict[str, object]] = {
    "integrated_gradients": {"n_steps": 4},
    "smoothgrad": {"n_samples": 3},
    "smoothgrad_sq": {"n_samples": 3},
    "vargrad": {"n_samples": 3},
    "scorecam": {"batch_size": 5},  # chunks that straddle images
    "occlusion": {
        "patch": 4,
        "stride": 3,
        "batch_size": 6,
    },  # windows cut at the border, batches of 6
    # SLIC on noise merges everything when made connected; batches straddle coalitions
    "superpixel_ablation": {"n_segments": 8, "connected": False, "batch_size": 5},
    "lime": {"n_segments": 8, "connected": False, "n_samples": 12, "batch_size": 5},
    "kernel_shap": {"n_segments": 8, "connected": False, "n_samples": 12, "batch_size": 5},
    "gradient_shap": {"n_samples": 5, "chunk": 4},
}

#: layer used for layer methods (CAMs) on TinyConvNet; ReusedReluNet's shared layer is "relu"
ATTRIBUTION_LAYER = "relu2"

#: methods that need another network than TinyConvNet (they do not apply to a CNN)
ATTRIBUTION_NETS: dict[str, str] = {"attention_map": "vit", "attention_rollout": "vit"}

#: methods also checked on TinyViT, layer methods on the token layer below (class and register tokens dropped)
VIT_ALSO = ("saliency", "gradcam", "gradcam_pp", "scorecam", "eigencam", "integrated_gradients")
VIT_LAYER = "blocks.1.norm1"


def _attribution_cases() -> list[MethodCase]:
    from convlens.attribution import METHODS

    cases = []
    for name, spec in sorted(METHODS.items()):

        def run(m, x, layer, g, spec=spec, name=name):  # type: ignore[no-untyped-def]
            kwargs = dict(ATTRIBUTION_OPTIONS.get(name, {}))
            if spec.uses_layer:
                kwargs["layer"] = layer
            if spec.random:
                kwargs["generator"] = g
            return spec.fn(m, x, 2, **kwargs)

        shape = (
            (lambda x: (x.shape[0], 1, *x.shape[-2:]))
            if spec.output == "cam"
            else (lambda x: tuple(x.shape))
        )
        net = ATTRIBUTION_NETS.get(name, "conv")
        cases.append(
            MethodCase(
                f"attribution/{name}",
                run,
                layer=(ATTRIBUTION_LAYER if net == "conv" else VIT_LAYER)
                if spec.uses_layer
                else None,
                shape=shape,
                net=net,
            )
        )
        if name in VIT_ALSO:
            cases.append(
                MethodCase(
                    f"attribution/{name}[vit]",
                    run,
                    layer=VIT_LAYER if spec.uses_layer else None,
                    shape=shape,
                    net="vit",
                )
            )
    return cases


REGISTRY: list[MethodCase] = [
    MethodCase(
        "input_gradient/class",
        lambda m, x, layer, g: input_gradient(m, x, 2),
        shape=lambda x: tuple(x.shape),
    ),
    MethodCase(
        "input_gradient/predicted",
        lambda m, x, layer, g: input_gradient(m, x, None),
        shape=lambda x: tuple(x.shape),
    ),
    MethodCase(
        "input_gradient/neuron",
        lambda m, x, layer, g: input_gradient(m, x, __import__("convlens").Neuron(layer, 1, 3, 4)),
        layer="relu1",
        shape=lambda x: tuple(x.shape),
    ),
    MethodCase(
        "layer_activations",
        lambda m, x, layer, g: layer_activations(m, x, layer),
        layer="relu1",
        shape=lambda x: (x.shape[0], 6, 16, 16),
    ),
    MethodCase(
        "layer_activations[vit]",
        lambda m, x, layer, g: layer_activations(m, x, layer),
        layer="blocks.0",
        shape=lambda x: (x.shape[0], 18, 16),  # tokens: class, register, 4x4 patches
        net="vit",
    ),
    MethodCase(
        "loss_layer_gradients",
        _stack_layer_grads,
        layer="relu2",
        shape=lambda x: (x.shape[0], 8, 8, 8),
    ),
]
REGISTRY += _attribution_cases()
