"""A labelled image set with a planted shortcut: digits on backgrounds that give the class away.

The wolf/snow example (Ribeiro, Singh & Guestrin, "Why Should I Trust You?", KDD 2016,
arXiv:1602.04938) made small: a classifier trained where the background predicts the label
can score well by looking at the background instead of the object. :func:`make_biased`
builds such a set from scikit-learn's 8x8 digits so that the right answer is known:

- each digit is upsampled 2x (nearest) to 16x16 and pasted at a random place on a 32x32
  RGB background of one of ten colours (:data:`PALETTE`), ink white:
  ``pixel = (1 - a) * background + a``, ``a`` the digit's grey level in [0, 1];
- split ``"train"`` (training digits) and ``"test"`` (held-out digits): the background is
  the label's own colour with probability ``bias`` (default 0.95), otherwise another
  class's colour chosen uniformly;
- split ``"counter"`` (held-out digits, the counter-cue split): always another class's
  colour, so a model that reads the background is wrong;
- split ``"unbiased"`` (training digits): any of the ten colours uniformly, whatever the
  label; a model trained on it has no shortcut;
- the object mask is the ink (every pixel with ``a > 0``, faint strokes included, so no
  part of the digit counts as background) dilated by one pixel (3x3), so a map that hugs
  the stroke edges still counts as on the object.

Every draw comes from NumPy's frozen ``RandomState`` stream, so a seed gives the same set
on every machine. :func:`write_biased` writes splits as class subfolders (ImageFolder
style, :mod:`convlens.data.folders`) with the masks under the same relative paths.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from convlens.errors import BadInputError

__all__ = [
    "BIAS",
    "INK_THRESHOLD",
    "PALETTE",
    "SIZE",
    "SPLITS",
    "BiasedSet",
    "make_biased",
    "write_biased",
]

SIZE = 32
#: Probability that a train/test image's background is its own class's colour.
BIAS = 0.95
#: Grey level above which a digit pixel counts as ink (before dilation): any ink at all.
INK_THRESHOLD = 0.0
SPLITS = ("train", "test", "counter", "unbiased")
#: Background colour of each class (RGB in [0, 1]); dark enough that white ink stands out.
PALETTE = np.array(
    [
        [0.60, 0.10, 0.10],  # 0 red
        [0.10, 0.45, 0.10],  # 1 green
        [0.10, 0.15, 0.60],  # 2 blue
        [0.55, 0.50, 0.05],  # 3 olive
        [0.50, 0.10, 0.50],  # 4 purple
        [0.05, 0.45, 0.45],  # 5 teal
        [0.65, 0.35, 0.05],  # 6 orange
        [0.30, 0.30, 0.30],  # 7 grey
        [0.05, 0.05, 0.05],  # 8 black
        [0.35, 0.20, 0.05],  # 9 brown
    ],
    dtype=np.float32,
)
_SPLIT_OFFSET = {"train": 0, "test": 1, "counter": 2, "unbiased": 3}
_NOISE = 0.04  # per-pixel background noise amplitude, so the colour is not a single value


@dataclass(frozen=True)
class BiasedSet:
    """Images of one split with what made them.

    Attributes
    ----------
    pixels
        float32 ``(N, 3, 32, 32)`` in [0, 1].
    labels
        int64 ``(N,)``: the digit.
    backgrounds
        int64 ``(N,)``: the class whose colour the background has.
    masks
        bool ``(N, 32, 32)``: the object (dilated ink).
    split
        The split's name.
    """

    pixels: Tensor
    labels: Tensor
    backgrounds: Tensor
    masks: Tensor
    split: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 binary dilation of ``(N, H, W)`` masks (a pixel is on if any neighbour is)."""
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
    h, w = mask.shape[1:]
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[:, dy : dy + h, dx : dx + w]
    return out


def make_biased(split: str, *, bias: float = BIAS, seed: int = 0) -> BiasedSet:
    """Digits on class-coloured backgrounds (see the module docstring for the recipe).

    Parameters
    ----------
    split
        ``"train"`` (1,438 training digits, biased), ``"test"`` (359 held-out digits,
        biased like train), ``"counter"`` (the held-out digits, background always another
        class's) or ``"unbiased"`` (training digits, background uniform).
    bias
        For ``train`` and ``test``: probability of the label's own background, in [0, 1].
    seed
        Seed of the placement, background and noise draws.

    Returns
    -------
    BiasedSet

    Raises
    ------
    BadInputError
        Unknown split or a bias outside [0, 1].
    """
    from convlens.models.small import load_dataset

    if split not in SPLITS:
        raise BadInputError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if not 0.0 <= float(bias) <= 1.0:
        raise BadInputError(f"bias {bias}: must be in [0, 1]")
    digits, labels = load_dataset("digits", "test" if split in ("test", "counter") else "train")
    ink = np.kron(digits[:, 0].numpy(), np.ones((2, 2), np.float32))  # (N, 16, 16)
    y = labels.numpy()
    n = len(y)
    rng = np.random.RandomState(seed * 10 + _SPLIT_OFFSET[split])
    # another class, uniformly: label + 1..9 (mod 10)
    other = (y + rng.randint(1, 10, size=n)) % 10
    if split == "counter":
        bg = other
    elif split == "unbiased":
        bg = rng.randint(0, 10, size=n)
    else:
        bg = np.where(rng.random_sample(n) < bias, y, other)
    offsets = rng.randint(0, SIZE - 16 + 1, size=(n, 2))
    noise = rng.uniform(-_NOISE, _NOISE, size=(n, 3, SIZE, SIZE)).astype(np.float32)
    alpha = np.zeros((n, SIZE, SIZE), np.float32)
    for i, (oy, ox) in enumerate(offsets):
        alpha[i, oy : oy + 16, ox : ox + 16] = ink[i]
    background = np.clip(PALETTE[bg][:, :, None, None] + noise, 0.0, 1.0)
    pixels = (1.0 - alpha[:, None]) * background + alpha[:, None]
    masks = _dilate(alpha > INK_THRESHOLD)
    return BiasedSet(
        torch.from_numpy(np.ascontiguousarray(pixels, np.float32)),
        torch.from_numpy(y.astype(np.int64)),
        torch.from_numpy(bg.astype(np.int64)),
        torch.from_numpy(masks),
        split,
    )


def write_biased(
    out: str | Path,
    *,
    splits: tuple[str, ...] = ("train", "test", "counter"),
    bias: float = BIAS,
    seed: int = 0,
) -> dict[str, int]:
    """Write splits as PNG class folders, their masks and an ``info.json``.

    Layout: ``OUT/<split>/<label>/<index>.png`` (RGB) and ``OUT/masks/<split>/<label>/<index>.png``
    (grey, 255 on the object, 0 elsewhere), plus ``OUT/<split>-backgrounds.csv``
    (``path,label,background``, paths relative to ``OUT/<split>``) and ``OUT/info.json`` (the recipe and counts).

    Parameters
    ----------
    out
        Output folder (created; existing files of the same names are replaced).
    splits
        Which splits of :data:`SPLITS` to write.
    bias, seed
        As for :func:`make_biased`.

    Returns
    -------
    dict
        Number of images written per split.
    """
    from PIL import Image

    root = Path(out)
    if root.exists() and not root.is_dir():
        raise BadInputError(f"{root}: exists and is not a folder")
    for split in splits:
        if split not in SPLITS:
            raise BadInputError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    counts: dict[str, int] = {}
    for split in splits:
        data = make_biased(split, bias=bias, seed=seed)
        images = (data.pixels.permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
        masks = data.masks.numpy().astype(np.uint8) * 255
        rows = ["path,label,background"]
        for i in range(len(data)):
            label = int(data.labels[i])
            rel = Path(str(label)) / f"{i:05d}.png"
            for folder, array in ((root / split, images[i]), (root / "masks" / split, masks[i])):
                (folder / rel.parent).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(folder / rel)
            rows.append(f"{rel.as_posix()},{label},{int(data.backgrounds[i])}")
        (root / f"{split}-backgrounds.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        counts[split] = len(data)
    info = {
        "recipe": "convlens.data.biased.make_biased",
        "size": SIZE,
        "bias": bias,
        "seed": seed,
        "ink_threshold": INK_THRESHOLD,
        "palette": PALETTE.round(3).tolist(),
        "counts": counts,
    }
    (root / "info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return counts
