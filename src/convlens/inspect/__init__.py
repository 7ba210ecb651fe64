"""Looking at a network: filters and FC templates, feature maps, gradients.

The course-notes views (Stanford CS231n, "Visualizing what ConvNets learn"): first-layer
filters, any layer's kernels per input channel, fully connected weights reshaped to
images when the layer sees pixels, feature maps, the gradient of the loss w.r.t. every
layer, and the gradient of a chosen layer or neuron w.r.t. the input; and which of a
layer's channels the decision needs (ablation, mean activation, gradient x activation) with
pruning curves.
"""

from convlens.inspect.activations import activations, layer_activations, representative_layers
from convlens.inspect.channels import CHANNEL_METHODS, channel_importance, pruning_curve
from convlens.inspect.filters import filter_images, filters
from convlens.inspect.gradients import gradients, input_gradient, loss_layer_gradients

__all__ = [
    "CHANNEL_METHODS",
    "activations",
    "channel_importance",
    "filter_images",
    "filters",
    "gradients",
    "input_gradient",
    "layer_activations",
    "loss_layer_gradients",
    "pruning_curve",
    "representative_layers",
]
