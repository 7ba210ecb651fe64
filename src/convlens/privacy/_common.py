"""What the privacy experiments share: the two datasets, the architectures they retrain,
and a :class:`~convlens.models.model.Model` around a freshly trained module.

Every experiment here trains its own models (targets, shadows, poisoned and clean
copies) through :func:`convlens.models.training.train_classifier`, so "same seed, same
weights" means the same thing as for the zoo models. Modules take *normalised* input,
as the zoo's small models do; the experiments work in pixel space ([0, 1]) and
normalise on the way in.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from convlens.errors import BadInputError
from convlens.models.labels import Labels
from convlens.models.model import Model
from convlens.models.preprocess import Preprocessing
from convlens.models.small import SPECS, build_module, load_dataset
from convlens.models.training import TrainConfig, seeded, train_classifier
from convlens.progress import ProgressFn

__all__ = [
    "ARCHITECTURES",
    "DATASETS",
    "accuracy",
    "architecture",
    "as_model",
    "check_dataset",
    "full_dataset",
    "normalize",
    "pixel_logits",
    "split_generator",
    "train_module",
]

DATASETS = ("digits", "mnist")
_ZOO_NAME = {"digits": "digits_cnn", "mnist": "mnist_cnn"}
ARCHITECTURES = ("alt", "cnn", "mlp")


def check_dataset(dataset: str) -> str:
    """``dataset`` if it is ``"digits"`` or ``"mnist"``; BadInputError otherwise."""
    if dataset not in DATASETS:
        raise BadInputError(f"unknown dataset {dataset!r}; use 'digits' or 'mnist'")
    return dataset


def normalize(dataset: str, pixels: Tensor) -> Tensor:
    """Pixel space to the modules' input space (the zoo model's mean / std)."""
    spec = SPECS[_ZOO_NAME[check_dataset(dataset)]]
    return (pixels - spec.mean) / spec.std


def full_dataset(dataset: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_test, y_test)`` in pixel space: the zoo's fixed split."""
    check_dataset(dataset)
    x_train, y_train = load_dataset(dataset, "train")
    x_test, y_test = load_dataset(dataset, "test")
    return x_train, y_train, x_test, y_test


def architecture(dataset: str, name: str = "cnn") -> nn.Module:
    """An untrained classifier for ``dataset``.

    ``"cnn"`` is the zoo's architecture (``digits_cnn`` / ``mnist_cnn``: layers ``conv1``,
    ``act1``, ..., ``flatten`` (the pooled convolutional features), ``act3`` (the hidden
    fully connected layer), ``classifier``). ``"alt"`` is a different one for independent
    checks: average pooling, wider convolutions, no hidden fully connected layer. ``"mlp"``
    is one hidden layer of 512 ReLU units (the membership-inference target).
    """
    check_dataset(dataset)
    if name == "cnn":
        return build_module(_ZOO_NAME[dataset])
    if name == "mlp":
        h, w = SPECS[_ZOO_NAME[dataset]].input_size
        return nn.Sequential(
            OrderedDict(
                [
                    ("flatten", nn.Flatten()),
                    ("fc", nn.Linear(h * w, 512)),
                    ("act1", nn.ReLU()),
                    ("classifier", nn.Linear(512, 10)),
                ]
            )
        )
    if name != "alt":
        raise BadInputError(f"unknown architecture {name!r}; use one of {', '.join(ARCHITECTURES)}")
    if dataset == "digits":
        layers: list[tuple[str, nn.Module]] = [
            ("conv1", nn.Conv2d(1, 32, 3, padding=1)),
            ("act1", nn.ReLU()),
            ("pool1", nn.AvgPool2d(2)),  # 8 -> 4
            ("conv2", nn.Conv2d(32, 64, 3, padding=1)),
            ("act2", nn.ReLU()),
            ("flatten", nn.Flatten()),
            ("classifier", nn.Linear(64 * 4 * 4, 10)),
        ]
    else:
        layers = [
            ("conv1", nn.Conv2d(1, 32, 3, padding=1)),
            ("act1", nn.ReLU()),
            ("pool1", nn.AvgPool2d(2)),  # 28 -> 14
            ("conv2", nn.Conv2d(32, 64, 3, padding=1)),
            ("act2", nn.ReLU()),
            ("pool2", nn.AvgPool2d(2)),  # 14 -> 7
            ("flatten", nn.Flatten()),
            ("classifier", nn.Linear(64 * 7 * 7, 10)),
        ]
    return nn.Sequential(OrderedDict(layers))


def train_module(
    dataset: str,
    x: Tensor,
    y: Tensor,
    config: TrainConfig,
    *,
    arch: str = "cnn",
    progress: ProgressFn | None = None,
) -> nn.Module:
    """A fresh ``arch`` module initialised with ``config.seed``, trained on pixels ``x``."""
    with seeded(config.seed):
        module = architecture(dataset, arch)
    train_classifier(module, normalize(dataset, x), y, config, progress=progress)
    return module


def as_model(module: nn.Module, dataset: str, name: str) -> Model:
    """A convlens :class:`Model` around a module trained here (for provenance, attribution)."""
    spec = SPECS[_ZOO_NAME[check_dataset(dataset)]]
    prep = Preprocessing(spec.input_size, None, (spec.mean,), (spec.std,), 1)
    return Model(module, prep, name=name, labels=Labels.from_names([str(k) for k in range(10)]))


def pixel_logits(module: nn.Module, dataset: str, pixels: Tensor, batch_size: int = 512) -> Tensor:
    """Logits of pixel-space inputs, eval mode, no gradients."""
    from convlens.models.training import predict_logits

    return predict_logits(module, normalize(dataset, pixels), batch_size)


def accuracy(module: nn.Module, dataset: str, pixels: Tensor, labels: Tensor) -> float:
    """Fraction of pixel-space ``pixels`` classified as ``labels``."""
    return float((pixel_logits(module, dataset, pixels).argmax(1) == labels).double().mean())


def split_generator(seed: int) -> torch.Generator:
    """A CPU generator for data splits, seeded apart from the training seed."""
    return torch.Generator().manual_seed(1_000_003 * int(seed) + 17)
