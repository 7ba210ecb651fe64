"""Two small CNNs on the coloured digits of :mod:`convlens.data.biased`: one with a shortcut, one without.

- ``bias_digits_cnn`` is trained on the ``"train"`` split, where the background colour
  predicts the digit 95 % of the time: it learns to read the background.
- ``fair_digits_cnn`` is the same net, recipe and seed trained on the ``"unbiased"`` split
  (same digits, background colour uniform): only the digit predicts the label.

The pair is the known answer for :mod:`convlens.metrics.bias`: on the held-out digits the
biased net puts more attribution mass outside the digit and loses accuracy on the
counter-cue split, where the background names another class.

The net: ``conv1/act1/pool1`` (32 -> 16, 16 ch), ``conv2/act2/pool2`` (16 -> 8, 32 ch),
``conv3/act3`` (8x8, 64 ch, the default CAM layer), global max ``pool`` (the
unbiased net reaches 0.85 counter-cue accuracy with a global mean in 20 epochs, 0.97 with the
max in 12; the recipe trains 6), ``flatten``,
``classifier``. Input: pixels normalised with :data:`MEAN` / :data:`STD` on every channel.
Trained with :func:`~convlens.models.training.train_classifier` (Adam, cosine schedule, one
thread, seeded), cached like the other small models (``{name}-v2.pt`` plus a JSON sidecar
with its sha256, written atomically; a mismatching file is retrained).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

from torch import nn

from convlens.errors import ConvlensError, UnknownModelError
from convlens.models.trained import CacheEntry, load_or_train
from convlens.models.training import (
    TrainConfig,
    evaluate_accuracy,
    seeded,
    torch_threads,
    train_classifier,
)
from convlens.progress import ProgressFn

__all__ = [
    "CACHE_VERSION",
    "MEAN",
    "MODELS",
    "STD",
    "build_module",
    "cache_paths",
    "get_trained",
    "train_config",
]


#: Model name -> the split of :func:`~convlens.data.biased.make_biased` it is trained on.
MODELS = {"bias_digits_cnn": "train", "fair_digits_cnn": "unbiased"}
#: Pixel mean / std of the training images (all channels alike; both splits within 0.01).
MEAN = 0.33
STD = 0.30
CACHE_VERSION = 2
#: Accuracy on the held-out digits (biased ``test`` split for the biased net, ``counter``
#: for the fair one, to which backgrounds mean nothing) a freshly trained net must reach.
_MIN_ACCURACY = 0.85
# 6 epochs: the demo trains both nets on first use within its time budget; 12 epochs moved the
# held-out accuracies by about one point (biased 0.939 -> 0.955, fair 0.953 -> 0.969) and
# left the gap in outside-object share and counter-cue accuracy as large.
_RECIPE = TrainConfig(epochs=6, batch_size=32, lr=3e-3, lr_schedule="cosine", seed=0, num_threads=1)


def _check(name: str) -> str:
    if name not in MODELS:
        raise UnknownModelError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return name


def train_config() -> TrainConfig:
    """The recipe both nets are trained with (a fresh copy)."""
    from dataclasses import replace

    return replace(_RECIPE)


def build_module(name: str) -> nn.Module:
    """The untrained net (random initial weights); normalised ``(N, 3, 32, 32)`` -> logits ``(N, 10)``."""
    _check(name)
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(3, 16, 3, padding=1)),
                ("act1", nn.ReLU()),
                ("pool1", nn.MaxPool2d(2)),
                ("conv2", nn.Conv2d(16, 32, 3, padding=1)),
                ("act2", nn.ReLU()),
                ("pool2", nn.MaxPool2d(2)),
                ("conv3", nn.Conv2d(32, 64, 3, padding=1)),
                ("act3", nn.ReLU()),
                (
                    "pool",
                    nn.AdaptiveMaxPool2d(1),
                ),  # max, not mean: a digit is a small local pattern
                ("flatten", nn.Flatten()),
                ("classifier", nn.Linear(64, 10)),
            ]
        )
    )


def cache_paths(name: str) -> tuple[Path, Path]:
    """``(weights .pt, metadata .json)`` in the cache folder."""
    return CacheEntry(_check(name), CACHE_VERSION).paths()


def _train(name: str, progress: ProgressFn | None) -> tuple[nn.Module, dict[str, Any]]:
    from convlens.data.biased import BIAS, make_biased

    config = train_config()
    train = make_biased(MODELS[name], seed=0)
    with seeded(config.seed):
        module = build_module(name)
    history = train_classifier(
        module, (train.pixels - MEAN) / STD, train.labels, config, progress=progress
    )
    with torch_threads(config.num_threads):
        acc = {
            split: evaluate_accuracy(module, (d.pixels - MEAN) / STD, d.labels)
            for split in ("test", "counter")
            for d in [make_biased(split, seed=0)]
        }
    floor_split = "test" if MODELS[name] == "train" else "counter"
    if acc[floor_split] < _MIN_ACCURACY:
        raise ConvlensError(
            f"training {name} reached {floor_split} accuracy {acc[floor_split]:.4f} < {_MIN_ACCURACY}; this should "
            + "not happen with the fixed recipe, please report it with your torch version"
        )
    meta = CacheEntry(name, CACHE_VERSION).metadata(
        dataset=f"convlens.data.biased split {MODELS[name]!r} (bias {BIAS if MODELS[name] == 'train' else 'none'}, seed 0)",
        seed=config.seed,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        lr_schedule=config.lr_schedule,
        optimizer=config.optimizer,
        num_threads=config.num_threads,
        train_size=len(train),
        test_accuracy=acc["test"],
        counter_accuracy=acc["counter"],
        train_loss=history["loss"],
        training_seconds=round(history["seconds"], 3),
        mean=MEAN,
        std=STD,
    )
    return module, meta


def get_trained(
    name: str, *, progress: ProgressFn | None = None, retrain: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """``bias_digits_cnn`` or ``fair_digits_cnn``: from the cache, or trained now (seconds) and cached.

    Parameters
    ----------
    name
        A key of :data:`MODELS`.
    progress
        Called as ``progress(epochs_done, epochs)`` while training (not on a cache hit).
    retrain
        Train even when a valid cache entry exists, and overwrite it.

    Returns
    -------
    module : nn.Module
        On CPU, in eval mode, expecting normalised pixels.
    metadata : dict
        The recipe, ``test_accuracy``, ``counter_accuracy``, ``sha256`` of the weights, versions, time.

    Raises
    ------
    UnknownModelError
        Not one of the two names.
    ConvlensError
        Training missed the accuracy floor.
    """
    return load_or_train(
        CacheEntry(_check(name), CACHE_VERSION),
        lambda: build_module(name),
        lambda: _train(name, progress),
        retrain=retrain,
    )
