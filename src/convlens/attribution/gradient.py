"""Plain-gradient attributions: saliency, gradient x input, layer/neuron gradient."""

from __future__ import annotations

import torch

from convlens.attribution.base import register_method
from convlens.inspect.gradients import input_gradient
from convlens.models.model import Model
from convlens.targets import TargetLike

__all__ = ["gradient_x_input", "layer_gradient", "saliency"]


@register_method(
    "saliency", reduce="max_abs", paper="Simonyan, Vedaldi & Zisserman 2014, arXiv:1312.6034"
)
def saliency(model: Model, x: torch.Tensor, target: TargetLike = None) -> torch.Tensor:
    """Vanilla gradient saliency: ``dS_c/dx``.

    Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks", 2014,
    arXiv:1312.6034. ``S_c`` is the unnormalised class score (the logit, not the softmax or
    the loss). The display map is ``max_channels |dS_c/dx|``.
    """
    return input_gradient(model, x, target)


@register_method("gradient_x_input", reduce="sum", paper="Shrikumar et al. 2016, arXiv:1605.01713")
def gradient_x_input(model: Model, x: torch.Tensor, target: TargetLike = None) -> torch.Tensor:
    """Gradient times input: ``x * dS/dx``.

    Shrikumar, Greenside, Shcherbina & Kundaje, "Not Just a Black Box", 2016, arXiv:1605.01713.
    """
    return input_gradient(model, x, target) * x


@register_method(
    "layer_gradient",
    reduce="max_abs",
    paper="Simonyan et al. 2014, arXiv:1312.6034; Erhan et al. 2009",
)
def layer_gradient(model: Model, x: torch.Tensor, target: TargetLike = None) -> torch.Tensor:
    """Gradient of any layer/neuron score w.r.t. the input: ``d h_{l,c}[y,x] / dx``.

    Pass a :class:`~convlens.targets.Neuron` (``"layer:channel[:y:x]"``) as the target; a
    class target gives the saliency gradient.
    """
    return input_gradient(model, x, target)
