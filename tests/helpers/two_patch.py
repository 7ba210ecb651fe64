"""Two equally bright textured patches, only one of which decides the class.

The localisation test of issue 4 ("Proof"): brightness cannot tell the patches apart
(both have mean 0.5, like the background), and on a quarter of the images the distractor is
the other class's stripe texture, so a method that merely finds stripes is right only by
chance there; switching the target to that class must move the map to the distractor,
which no class-agnostic method can do. (Random 3x3 filters respond more to stripes than to
the finer checkerboard, so texture alone does find the deciding patch on the other images:
the switching check is the strong one.)

Every image (``3 x 32 x 32``, pixel space [0, 1]) is mid-grey noise with two ``8 x 8``
patches at random, well-separated positions. Each patch holds one of three textures,
all of mean exactly 0.5 and the same contrast (period-4 square waves, random phase):

- ``0`` horizontal stripes, ``1`` vertical stripes, ``2`` a checkerboard of 2x2 cells.

The class is decided by a priority rule, horizontal > vertical > checkerboard: an image
holds horizontal stripes and either vertical stripes or a checkerboard (class 0,
"horizontal"), or vertical stripes and a checkerboard (class 1, "vertical"); the two are
balanced. The *deciding* patch is the stripe patch of the image's class; the other one is
the *distractor*. On images with both stripe patches the distractor carries the other
class's texture, so explaining the other class should move the map to it
(:attr:`TwoPatchSet.distractor_texture` says which images these are).

The model has a third class, "neither" (two checkerboards), seen only in training. Without
it, "vertical" would simply mean "no horizontal stripes", the checkerboard would be as good
a cue for it as the vertical stripes, and no single patch would decide (with three
textures and two patches, any rule is a function of the missing texture). With it, the
vertical stripes are necessary for class 1. :func:`make_two_patch` makes only the two
stripe classes, so every image it returns has a deciding patch.

API::

    x, y, deciding_boxes, distractor_boxes = make_two_patch(n, seed)
    model, test = train_two_patch_cnn(seed)      # convlens Model, held-out TwoPatchSet
    x_test, y_test, deciding, distractor = test
    untrained = two_patch_model(seed)            # the same architecture, random weights

Boxes are int64 ``(n, 4)`` rows ``(top, left, bottom, right)`` with bottom/right exclusive.
The model's input space is ``model.normalize(x)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor, nn

import convlens
from convlens.models.training import TrainConfig, evaluate_accuracy, seeded, train_classifier

__all__ = [
    "CLASSES",
    "IMAGE_SIZE",
    "PATCH_SIZE",
    "TEXTURES",
    "TwoPatchCNN",
    "TwoPatchSet",
    "in_box",
    "make_two_patch",
    "peaks",
    "train_two_patch_cnn",
    "two_patch_model",
]

IMAGE_SIZE = 32
PATCH_SIZE = 8
TEXTURES = ("horizontal stripes", "vertical stripes", "checkerboard")
CLASSES = ("horizontal", "vertical", "neither")
_GAP = 4  # minimum free pixels between the two patches
_AMPLITUDE = 0.35
_NOISE = 0.08
MEAN, STD = 0.5, 0.25  # the model's normalisation


@dataclass(frozen=True)
class TwoPatchSet:
    """Images, labels and patch boxes; unpacks as ``(x, y, deciding_boxes, distractor_boxes)``."""

    x: Tensor  # (n, 3, 32, 32) pixel space
    y: Tensor  # (n,) int64: 0 horizontal, 1 vertical
    deciding_boxes: Tensor  # (n, 4) int64
    distractor_boxes: Tensor  # (n, 4) int64
    distractor_texture: Tensor  # (n,) int64: 1 vertical stripes (a class texture) or 2 checkerboard

    def __iter__(self) -> Iterator[Tensor]:
        return iter((self.x, self.y, self.deciding_boxes, self.distractor_boxes))

    def __len__(self) -> int:
        return int(self.y.shape[0])


def _texture(kind: int, phase: int) -> Tensor:
    """One 8x8 patch of mean 0.5: a period-4 square wave along rows, columns or both."""
    r = torch.arange(PATCH_SIZE).view(-1, 1) + phase
    c = torch.arange(PATCH_SIZE).view(1, -1) + phase
    rows = ((r // 2) % 2) * 2 - 1  # +-1, two pixels each
    cols = ((c // 2) % 2) * 2 - 1
    wave = {
        0: rows.expand(PATCH_SIZE, PATCH_SIZE),
        1: cols.expand(PATCH_SIZE, PATCH_SIZE),
        2: rows * cols,
    }[kind]
    return 0.5 + _AMPLITUDE * wave.float()


def _two_boxes(g: torch.Generator) -> tuple[list[int], list[int]]:
    """Two patch positions whose boxes are at least ``_GAP`` pixels apart."""
    span = IMAGE_SIZE - PATCH_SIZE + 1
    while True:
        (t1, l1, t2, l2) = torch.randint(0, span, (4,), generator=g).tolist()
        apart = abs(t1 - t2) >= PATCH_SIZE + _GAP or abs(l1 - l2) >= PATCH_SIZE + _GAP
        if apart:
            return [t1, l1, t1 + PATCH_SIZE, l1 + PATCH_SIZE], [
                t2,
                l2,
                t2 + PATCH_SIZE,
                l2 + PATCH_SIZE,
            ]


def _render(
    n: int, first: Tensor, second: Tensor, g: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Noise images with a patch of texture ``first[i]`` and one of ``second[i]``: (x, boxes, boxes)."""
    x = (0.5 + _NOISE * torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)).clamp(0, 1)
    phases = torch.randint(0, 4, (n, 2), generator=g)
    boxes_1, boxes_2 = [], []
    for i in range(n):
        box_1, box_2 = _two_boxes(g)
        for box, kind, phase in (
            (box_1, int(first[i]), int(phases[i, 0])),
            (box_2, int(second[i]), int(phases[i, 1])),
        ):
            t, lft, b, r = box
            noise = _NOISE * torch.randn(3, PATCH_SIZE, PATCH_SIZE, generator=g)
            x[i, :, t:b, lft:r] = (_texture(kind, phase) + noise).clamp(0, 1)
        boxes_1.append(box_1)
        boxes_2.append(box_2)
    return x, torch.tensor(boxes_1, dtype=torch.long), torch.tensor(boxes_2, dtype=torch.long)


def make_two_patch(n: int, seed: int) -> TwoPatchSet:
    """``n`` seeded images of the two stripe classes, each with a deciding and a distractor patch."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    # horizontal beats vertical stripes or a checkerboard; vertical beats a checkerboard
    other = torch.where(y == 0, torch.randint(1, 3, (n,), generator=g), torch.full((n,), 2))
    x, deciding, distractor = _render(n, y, other, g)
    return TwoPatchSet(x, y, deciding, distractor, other)


def _make_neither(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Training images of the third class, "neither": two checkerboards, no stripes."""
    g = torch.Generator().manual_seed(seed)
    checker = torch.full((n,), 2)
    x, _, _ = _render(n, checker, checker, g)
    return x, torch.full((n,), 2)


def in_box(points: Tensor, boxes: Tensor) -> Tensor:
    """Whether each ``(row, col)`` point ``(n, 2)`` lies in its box ``(n, 4)``: bool ``(n,)``."""
    r, c = points.unbind(dim=1)
    return (r >= boxes[:, 0]) & (r < boxes[:, 2]) & (c >= boxes[:, 1]) & (c < boxes[:, 3])


class TwoPatchCNN(nn.Module):
    """conv-relu, strided conv-relu, conv-relu (``relu3``: 32 x 16 x 16), GAP, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, len(CLASSES))

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu1(self.conv1(x))
        x = self.relu2(self.conv2(x))
        x = self.relu3(self.conv3(x))
        return self.fc(self.pool(x).flatten(1))


def _wrap(module: nn.Module, name: str) -> convlens.Model:
    module.eval()
    return convlens.wrap(
        module,
        input_size=IMAGE_SIZE,
        mean=MEAN,
        std=STD,
        resize=None,
        labels=list(CLASSES),
        name=name,
    )


def two_patch_model(seed: int = 0) -> convlens.Model:
    """The architecture of :func:`train_two_patch_cnn` with seeded random weights."""
    with seeded(seed):
        module = TwoPatchCNN()
    return _wrap(module, f"two-patch-random-{seed}")


@lru_cache(maxsize=4)
def train_two_patch_cnn(
    seed: int = 0, n_train: int = 1500, n_test: int = 400
) -> tuple[convlens.Model, TwoPatchSet]:
    """Train :class:`TwoPatchCNN` on fresh two-patch images (seconds on one thread).

    Cached per process (the same objects are returned: do not modify them). Returns the
    wrapped model and a held-out :class:`TwoPatchSet`; the model's held-out accuracy is in
    ``model.info["test_accuracy"]``.
    """
    train = make_two_patch(n_train, seed=1000 + seed)
    x_neither, y_neither = _make_neither(n_train // 2, seed=3000 + seed)
    x_train = torch.cat([train.x, x_neither])
    y_train = torch.cat([train.y, y_neither])
    test = make_two_patch(n_test, seed=2000 + seed)
    with seeded(seed):
        module = TwoPatchCNN()
    config = TrainConfig(
        epochs=5, batch_size=64, lr=3e-3, seed=seed, num_threads=1, lr_schedule="cosine"
    )
    train_classifier(module, (x_train - MEAN) / STD, y_train, config)
    model = _wrap(module, f"two-patch-{seed}")
    model.info["test_accuracy"] = evaluate_accuracy(module, (test.x - MEAN) / STD, test.y)
    return model, test


def peaks(maps: Tensor) -> Tensor:
    """``(row, col)`` of each map's maximum, ``(n, 2)``, for maps ``(n, 1, H, W)`` or ``(n, H, W)``."""
    flat = maps.reshape(maps.shape[0], -1).argmax(dim=1)
    width = maps.shape[-1]
    return torch.stack([flat // width, flat % width], dim=1)
