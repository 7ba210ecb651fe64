"""``shapes_segnet``: a small segmentation net convlens trains on synthetic shapes and caches.

The data (:func:`make_shapes`): 32x32 RGB images, each with one axis-aligned square and
one disc of random size, position and colour on a dark noisy background, and per-pixel
labels 0 background, 1 square, 2 disc. The two shapes never overlap and are drawn from the
same colour distribution, so only their *shape* tells them apart. The generator is seeded
and reusable: tests draw images whose masks they know.

The net (:class:`ShapesSegNet`): a small U-Net (Ronneberger, Fischer & Brox, "U-Net:
Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015, arXiv:1505.04597):
two stride-2 convolutions down to 8x8, two nearest-neighbour upsamplings back with skip
connections, and a 1x1 head giving logits ``(N, 3, 32, 32)``. It takes pixels normalised
with :data:`MEAN` / :data:`STD`.

Training: per-pixel cross-entropy, Adam with a cosine schedule, one intra-op thread, seeded
(a few seconds on one core). The held-out mean IoU must reach :data:`MIN_MIOU`. The trained
weights are cached like the small classifiers (:mod:`convlens.models.small`):
``shapes_segnet-v1.pt`` plus a JSON sidecar holding its sha256, written atomically; a file
whose hash does not match its sidecar is retrained.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlens.errors import BadInputError, ConvlensError
from convlens.models.trained import CacheEntry, load_or_train
from convlens.models.training import TrainConfig, make_generator, seeded, torch_threads
from convlens.progress import ProgressFn

__all__ = [
    "CACHE_VERSION",
    "LABELS",
    "MEAN",
    "MIN_MIOU",
    "NAME",
    "SIZE",
    "ShapesSegNet",
    "cache_paths",
    "get_trained",
    "make_shapes",
    "mean_iou",
    "predict_masks",
    "train_config",
]


NAME = "shapes_segnet"
LABELS = ["background", "square", "disc"]
SIZE = 32
#: Pixel mean / std of the generated images (all channels alike), measured on 2,000 images.
MEAN = 0.33
STD = 0.21
#: Held-out mean IoU (over the three classes) a freshly trained net must reach.
MIN_MIOU = 0.85
#: Bump when the architecture, the data or the recipe changes, so old cache files are not reused.
CACHE_VERSION = 1

_TRAIN_SEED, _TEST_SEED = 0, 1
_N_TRAIN, _N_TEST = 1400, 400
_RECIPE = TrainConfig(epochs=6, batch_size=16, lr=3e-3, lr_schedule="cosine", seed=0, num_threads=1)


# -- data -------------------------------------------------------------------------------
def make_shapes(n: int, seed: int = 0, size: int = SIZE) -> tuple[Tensor, Tensor]:
    """``n`` images with one square and one disc each, and their per-pixel labels.

    Square sides are 7-12 px and disc diameters 8-12 px (about the same area), at random
    positions with at least one background pixel between the two. Colours are drawn per
    shape from ``[0.5, 1]^3``; the background is ``0.1 + 0.3 * uniform noise`` per pixel
    and channel. The stream is NumPy's frozen ``RandomState``, so a seed gives the same
    images on every machine and version.

    Parameters
    ----------
    n
        Number of images.
    seed
        Seed of the generator (training uses 0, the held-out split 1).
    size
        Side in pixels (at least 24).

    Returns
    -------
    pixels : Tensor
        float32 ``(n, 3, size, size)`` in [0, 1].
    labels : Tensor
        int64 ``(n, size, size)``: 0 background, 1 square, 2 disc.
    """
    if not isinstance(n, int) or n < 1:
        raise BadInputError(f"make_shapes n={n!r} must be an int >= 1")
    if not isinstance(size, int) or size < 24:
        raise BadInputError(
            f"make_shapes size={size!r} must be an int >= 24 (the shapes are up to 12 px)"
        )
    rng = np.random.RandomState(seed)
    pixels = np.empty((n, 3, size, size), np.float32)
    labels = np.zeros((n, size, size), np.int64)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        pixels[i] = 0.1 + 0.3 * rng.random_sample((3, size, size))
        while True:  # rejection sampling of two boxes one pixel apart
            side = rng.randint(7, 13)
            sy, sx = rng.randint(0, size - side + 1, size=2)
            diameter = rng.randint(8, 13)
            dy, dx = rng.randint(0, size - diameter + 1, size=2)
            apart = sy + side < dy or dy + diameter < sy or sx + side < dx or dx + diameter < sx
            if apart:
                break
        square = np.zeros((size, size), bool)
        square[sy : sy + side, sx : sx + side] = True
        r = diameter / 2
        disc = (yy + 0.5 - (dy + r)) ** 2 + (xx + 0.5 - (dx + r)) ** 2 <= r * r
        for label, mask in ((1, square), (2, disc)):
            colour = 0.5 + 0.5 * rng.random_sample(3)
            pixels[i][:, mask] = colour[:, None].astype(np.float32)
            labels[i][mask] = label
    return torch.from_numpy(pixels), torch.from_numpy(labels)


# -- the net ----------------------------------------------------------------------------
class ShapesSegNet(nn.Module):
    """A small U-Net: ``(N, 3, 32, 32)`` normalised pixels -> logits ``(N, 3, 32, 32)``.

    Layers (dotted names): ``conv1/act1`` (32x32, 8 ch), ``down1/act2`` (16x16, 16),
    ``down2/act3`` (8x8, 32), ``conv4/act4`` (8x8, 32, the bottleneck), ``up1`` then
    ``conv5/act5`` on ``[up1, act2]`` (16x16, 16), ``up2`` then ``conv6/act6`` on
    ``[up2, act1]`` (32x32, 8), ``head`` (1x1, 3 classes). Every module runs once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.ReLU()
        self.down1 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.act2 = nn.ReLU()
        self.down2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.act3 = nn.ReLU()
        self.conv4 = nn.Conv2d(32, 32, 3, padding=1)
        self.act4 = nn.ReLU()
        self.up1 = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv5 = nn.Conv2d(32 + 16, 16, 3, padding=1)
        self.act5 = nn.ReLU()
        self.up2 = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv6 = nn.Conv2d(16 + 8, 8, 3, padding=1)
        self.act6 = nn.ReLU()
        self.head = nn.Conv2d(8, len(LABELS), 1)

    def forward(self, x: Tensor) -> Tensor:
        a1 = self.act1(self.conv1(x))
        a2 = self.act2(self.down1(a1))
        a3 = self.act3(self.down2(a2))
        a4 = self.act4(self.conv4(a3))
        a5 = self.act5(self.conv5(torch.cat([self.up1(a4), a2], dim=1)))
        a6 = self.act6(self.conv6(torch.cat([self.up2(a5), a1], dim=1)))
        return self.head(a6)


def normalize(pixels: Tensor) -> Tensor:
    """Pixel space [0, 1] -> the net's input space."""
    return (pixels - MEAN) / STD


# -- training and evaluation ------------------------------------------------------------
def train_config() -> TrainConfig:
    """The recipe :func:`get_trained` uses (a fresh copy)."""
    from dataclasses import replace

    return replace(_RECIPE)


def predict_masks(module: nn.Module, pixels: Tensor, batch_size: int = 256) -> Tensor:
    """Per-pixel arg-max labels ``(N, H, W)`` of pixel-space images (eval mode, no gradient)."""
    from convlens.hooks import eval_mode

    out = []
    with eval_mode(module), torch.no_grad():
        for chunk in pixels.split(batch_size):
            out.append(module(normalize(chunk)).argmax(dim=1))
    return torch.cat(out)


def mean_iou(predicted: Tensor, labels: Tensor, classes: int = len(LABELS)) -> float:
    """Mean over classes of ``|P_c & L_c| / |P_c | L_c|``, pooled over all images."""
    ious = []
    for c in range(classes):
        p, t = predicted == c, labels == c
        union = int((p | t).sum())
        ious.append(int((p & t).sum()) / union if union else 1.0)
    return float(np.mean(ious))


def _train(progress: ProgressFn | None) -> tuple[nn.Module, dict[str, Any]]:
    config = train_config()
    x_train, y_train = make_shapes(_N_TRAIN, _TRAIN_SEED)
    x_test, y_test = make_shapes(_N_TEST, _TEST_SEED)
    with seeded(config.seed):  # weight initialisation, without touching the caller's RNG
        module = ShapesSegNet()
    optimizer = torch.optim.Adam(module.parameters(), lr=config.lr)
    steps = config.epochs * math.ceil(_N_TRAIN / config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    generator = make_generator(config.seed)
    inputs = normalize(x_train)
    losses = []
    started = time.perf_counter()
    with seeded(config.seed), torch_threads(config.num_threads):
        module.train()
        for epoch in range(config.epochs):
            order = torch.randperm(_N_TRAIN, generator=generator)
            total = 0.0
            for start in range(0, _N_TRAIN, config.batch_size):
                idx = order[start : start + config.batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(module(inputs[idx]), y_train[idx])
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item() * idx.numel()
            losses.append(total / _N_TRAIN)
            if progress is not None:
                progress(epoch + 1, config.epochs)
        module.eval()
        miou = mean_iou(predict_masks(module, x_test), y_test)
    seconds = time.perf_counter() - started
    if miou < MIN_MIOU:
        raise ConvlensError(
            f"training {NAME} reached held-out mean IoU {miou:.4f} < {MIN_MIOU}; this should not happen "
            + "with the fixed recipe, please report it with your torch version"
        )
    meta = CacheEntry(NAME, CACHE_VERSION).metadata(
        dataset=f"synthetic shapes {SIZE}x{SIZE} (make_shapes seeds {_TRAIN_SEED}/{_TEST_SEED})",
        seed=config.seed,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        lr_schedule=config.lr_schedule,
        optimizer="adam",
        num_threads=config.num_threads,
        train_size=_N_TRAIN,
        test_size=_N_TEST,
        held_out_miou=miou,
        train_loss=losses,
        training_seconds=round(seconds, 3),
        mean=MEAN,
        std=STD,
    )
    return module, meta


# -- the cache --------------------------------------------------------------------------
def cache_paths() -> tuple[Path, Path]:
    """``(weights .pt, metadata .json)`` in the cache folder."""
    return CacheEntry(NAME, CACHE_VERSION).paths()


def get_trained(
    *, progress: ProgressFn | None = None, retrain: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained ``shapes_segnet``: from the cache, or trained now (seconds) and cached.

    Parameters
    ----------
    progress
        Called as ``progress(epochs_done, epochs)`` while training (not on a cache hit).
    retrain
        Train even when a valid cache entry exists, and overwrite it.

    Returns
    -------
    module : ShapesSegNet
        On CPU, in eval mode, expecting :func:`normalize`-d pixels.
    metadata : dict
        The recipe, ``held_out_miou``, ``sha256`` of the weights file, versions and time.

    Raises
    ------
    ConvlensError
        Training missed :data:`MIN_MIOU`.
    """
    return load_or_train(
        CacheEntry(NAME, CACHE_VERSION), ShapesSegNet, lambda: _train(progress), retrain=retrain
    )
