"""Style: Gram matrices, neural style transfer, texture synthesis, fast feed-forward
stylisation and cue-conflict images (docs/features/style.md)."""

from convlens.style.cue_conflict import make_cue_conflict
from convlens.style.fast import (
    StyleNet,
    TrainedStyleNet,
    load_style_net,
    perceptual_losses,
    save_style_net,
    stylize,
    train_style_net,
)
from convlens.style.gram import FEATURE_TRANSFORMS, gram_matrix, mean_variance, transform_features
from convlens.style.losses import (
    DEFAULT_LAYERS,
    StyleLayers,
    content_loss,
    default_layers,
    style_loss,
    style_targets,
)
from convlens.style.transfer import preserve_colors, style_transfer, synthesize_texture

__all__ = [
    "DEFAULT_LAYERS",
    "FEATURE_TRANSFORMS",
    "StyleLayers",
    "StyleNet",
    "TrainedStyleNet",
    "content_loss",
    "default_layers",
    "gram_matrix",
    "load_style_net",
    "make_cue_conflict",
    "mean_variance",
    "perceptual_losses",
    "preserve_colors",
    "save_style_net",
    "style_loss",
    "style_targets",
    "style_transfer",
    "stylize",
    "synthesize_texture",
    "train_style_net",
    "transform_features",
]
