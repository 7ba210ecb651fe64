"""convlens: see inside convolutional neural networks.

The public API. Everything listed in ``__all__`` is stable; submodules hold the rest.

>>> import convlens
>>> model = convlens.load_model()              # EfficientNet-Lite0, ImageNet, offline
>>> model.predict("sample:cat")[0].labels[:3]
"""

from convlens.adversarial import attack
from convlens.attribution.base import explain
from convlens.errors import (
    AmbiguousLabelError,
    BadInputError,
    ConvlensError,
    ImageReadError,
    LayerNotFoundError,
    LayerReusedError,
    MissingDependencyError,
    TargetError,
    UnknownModelError,
)
from convlens.hooks import backward_rules, capture, eval_mode, frozen, trace_calls
from convlens.layers import LayerInfo, ReceptiveField
from convlens.memory import keep_freed_memory
from convlens.models.labels import Labels, imagenet_labels
from convlens.models.model import Batch, Model, Prediction, wrap
from convlens.models.preprocess import Geometry, Preprocessing
from convlens.models.zoo import available_models, load_model
from convlens.results import Result
from convlens.style import style_transfer
from convlens.targets import Neuron, Target, resolve_target

__version__ = "0.1.0"

__all__ = [
    "AmbiguousLabelError",
    "BadInputError",
    "Batch",
    "ConvlensError",
    "Geometry",
    "ImageReadError",
    "Labels",
    "LayerInfo",
    "LayerNotFoundError",
    "LayerReusedError",
    "MissingDependencyError",
    "Model",
    "Neuron",
    "Prediction",
    "Preprocessing",
    "ReceptiveField",
    "Result",
    "Target",
    "TargetError",
    "UnknownModelError",
    "__version__",
    "attack",
    "available_models",
    "backward_rules",
    "capture",
    "eval_mode",
    "explain",
    "frozen",
    "imagenet_labels",
    "keep_freed_memory",
    "load_model",
    "resolve_target",
    "style_transfer",
    "trace_calls",
    "wrap",
]
