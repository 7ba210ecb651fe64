"""Style: Gram matrices, neural style transfer, texture synthesis, fast feed-forward
stylisation and cue-conflict images (docs/features/style.md)."""

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
    "content_loss",
    "default_layers",
    "gram_matrix",
    "mean_variance",
    "preserve_colors",
    "style_loss",
    "style_targets",
    "style_transfer",
    "synthesize_texture",
    "transform_features",
]
