"""The biased coloured-digits generator (convlens.data.biased): its invariants, checked independently.

- background statistics per split: own-colour rate near ``bias`` (binomial bounds), never
  own on the counter-cue split, about 1/10 on the unbiased split;
- every pixel outside the ink is its background's palette colour within the noise, and the
  ink recovered from the pixels, ``(p - bg) / (1 - bg)``, is the upsampled source digit;
- the mask equals scipy's 3x3 binary dilation of the ink above the threshold;
- seeded: the same seed gives the same set, another seed another;
- ``write_biased`` round trip: the PNGs read back equal the 8-bit images, the masks the
  masks, and ``scan_labelled`` recovers the labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from convlens.data.biased import INK_THRESHOLD, PALETTE, make_biased, write_biased
from convlens.data.folders import scan_labelled
from convlens.errors import BadInputError
from convlens.models.small import load_dataset


@pytest.mark.parametrize("bias", [0.95, 0.7])
def test_train_backgrounds_follow_the_bias(bias: float) -> None:
    d = make_biased("train", bias=bias)
    n = len(d)
    own = float((d.backgrounds == d.labels).double().mean())
    sd = (bias * (1 - bias) / n) ** 0.5
    assert abs(own - bias) < 4 * sd, (own, bias)
    # the other backgrounds are spread over the other nine classes
    wrong = d.backgrounds[d.backgrounds != d.labels]
    assert len(set(wrong.tolist())) == 10


def test_counter_split_never_shows_the_own_background_and_unbiased_is_uniform() -> None:
    c = make_biased("counter")
    assert bool((c.backgrounds != c.labels).all())
    u = make_biased("unbiased")
    own = float((u.backgrounds == u.labels).double().mean())
    assert abs(own - 0.1) < 4 * (0.09 / len(u)) ** 0.5
    assert torch.bincount(u.backgrounds, minlength=10).min() > 100


@pytest.mark.parametrize("split", ["train", "counter"])
def test_pixels_are_the_digit_over_its_background(split: str) -> None:
    d = make_biased(split)
    digits, labels = load_dataset("digits", "test" if split == "counter" else "train")
    assert torch.equal(d.labels, labels)
    px = d.pixels.numpy()
    assert px.shape == (len(d), 3, 32, 32) and px.min() >= 0.0 and px.max() <= 1.0
    bg = PALETTE[d.backgrounds.numpy()]  # (N, 3)
    masks = d.masks.numpy()
    for i in range(0, len(d), 37):
        outside = ~masks[i]
        diff = np.abs(px[i][:, outside] - bg[i][:, None])
        assert diff.max() <= 0.04 + 1e-6  # only the background noise
        # recover the ink: p = (1 - a) bg + a  ->  a = (p - bg) / (1 - bg), noise aside;
        # the 16x16 box of the upsampled digit sits where the recovered ink matches it best
        alpha = ((px[i] - bg[i][:, None, None]) / (1 - bg[i][:, None, None])).mean(axis=0)
        digit = np.kron(digits[i, 0].numpy(), np.ones((2, 2)))
        errors = [
            np.abs(alpha[y : y + 16, x : x + 16] - digit).max()
            for y in range(17)
            for x in range(17)
        ]
        assert min(errors) < 0.1
        ink = np.zeros((32, 32), bool)
        best = int(np.argmin(errors))
        y, x = divmod(best, 17)
        ink[y : y + 16, x : x + 16] = digit > INK_THRESHOLD
        assert np.array_equal(
            masks[i], ndimage.binary_dilation(ink, structure=np.ones((3, 3), bool))
        )


def test_seeded() -> None:
    a, b, c = make_biased("test", seed=3), make_biased("test", seed=3), make_biased("test", seed=4)
    assert (
        torch.equal(a.pixels, b.pixels)
        and torch.equal(a.masks, b.masks)
        and torch.equal(a.backgrounds, b.backgrounds)
    )
    assert not torch.equal(a.pixels, c.pixels)


def test_bad_arguments() -> None:
    with pytest.raises(BadInputError, match="unknown split"):
        make_biased("validation")
    with pytest.raises(BadInputError, match="bias"):
        make_biased("train", bias=1.5)


def test_written_folders_round_trip(tmp_path: Path) -> None:
    counts = write_biased(tmp_path, splits=("counter",), seed=1)
    d = make_biased("counter", seed=1)
    assert counts == {"counter": len(d)}
    items = scan_labelled(tmp_path / "counter")
    assert len(items) == len(d)
    for item in items[::50]:
        i = int(item.path.stem)
        assert item.label == int(d.labels[i])
        img = np.asarray(Image.open(item.path))
        expected = np.round(d.pixels[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        assert np.abs(img.astype(int) - expected.astype(int)).max() <= 1
        mask = np.asarray(
            Image.open(tmp_path / "masks" / "counter" / item.path.relative_to(tmp_path / "counter"))
        )
        assert np.array_equal(mask > 127, d.masks[i].numpy())
    assert (tmp_path / "info.json").is_file() and (tmp_path / "counter-backgrounds.csv").is_file()
