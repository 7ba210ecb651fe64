"""Images made by optimisation: the engine, objectives, parameterisations, transforms,
and class / neuron / layer visualisation on top of them.

>>> from convlens.optimize import class_score, l2, optimize, visualize_class
>>> result = optimize(model, class_score(130) - 1e-3 * l2(), steps=128)
>>> result = visualize_class(model, "flamingo")

DeepDream (:func:`deep_dream`), feature inversion (:func:`invert`) and fooling images
(:func:`fool` from a photo, :func:`fool_from_noise` from noise or a CPPN pattern) live here too.
"""

from convlens.optimize.cppn import CPPNParam
from convlens.optimize.dream import deep_dream
from convlens.optimize.engine import OPTIMIZERS, evaluate_objective, make_param, optimize
from convlens.optimize.fool import fool, fool_from_noise
from convlens.optimize.invert import invert, invert_layers, psnr
from convlens.optimize.objectives import (
    Objective,
    ObjectiveContext,
    as_objective,
    centre_bias,
    channel,
    class_score,
    deepdream,
    direction,
    diversity,
    feature_distance,
    l2,
    layer_mean,
    neuron,
    total_variation,
)
from convlens.optimize.param import (
    COLOR_CORRELATION_SQRT,
    FourierParam,
    ImageParam,
    PixelParam,
    fourier_scale,
)
from convlens.optimize.transforms import (
    AffineTransform,
    Compose,
    Pad,
    Transform,
    clip_small_gradients,
    clip_small_pixels,
    compose,
    gaussian_blur,
    jitter,
    pad,
    random_rotate,
    random_scale,
    standard_transforms,
)
from convlens.optimize.visualize import visualize_class, visualize_layer, visualize_neuron

__all__ = [
    "COLOR_CORRELATION_SQRT",
    "OPTIMIZERS",
    "AffineTransform",
    "CPPNParam",
    "Compose",
    "FourierParam",
    "ImageParam",
    "Objective",
    "ObjectiveContext",
    "Pad",
    "PixelParam",
    "Transform",
    "as_objective",
    "centre_bias",
    "channel",
    "class_score",
    "clip_small_gradients",
    "clip_small_pixels",
    "compose",
    "deep_dream",
    "deepdream",
    "direction",
    "diversity",
    "evaluate_objective",
    "feature_distance",
    "fool",
    "fool_from_noise",
    "fourier_scale",
    "gaussian_blur",
    "invert",
    "invert_layers",
    "jitter",
    "l2",
    "layer_mean",
    "make_param",
    "neuron",
    "optimize",
    "pad",
    "psnr",
    "random_rotate",
    "random_scale",
    "standard_transforms",
    "total_variation",
    "visualize_class",
    "visualize_layer",
    "visualize_neuron",
]
