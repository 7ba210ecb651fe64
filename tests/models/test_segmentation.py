"""shapes_segnet: the synthetic shapes, the trained net (mIoU floor) and its cache.

The net trains once into a module-scoped cache folder (about 10 s on one thread).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import convlens
from convlens.errors import BadInputError
from convlens.models import segmentation as seg
from convlens.models.cache import file_sha256

# held-out mIoU measured over training seeds 0-1 (torch 2.13, CPU, 1 thread): 0.966-0.997
MIOU_FLOOR = 0.9


def _np_miou(pred: np.ndarray, truth: np.ndarray, classes: int = 3) -> float:
    """Mean IoU from a confusion matrix (a second computation, independent of seg.mean_iou)."""
    confusion = np.bincount(
        truth.ravel() * classes + pred.ravel(), minlength=classes * classes
    ).reshape(classes, classes)
    tp = np.diag(confusion)
    return float(np.mean(tp / (confusion.sum(0) + confusion.sum(1) - tp)))


def test_shapes_have_the_labels_they_are_drawn_with() -> None:
    pixels, labels = seg.make_shapes(64, seed=3)
    assert pixels.shape == (64, 3, 32, 32) and labels.shape == (64, 32, 32)
    assert pixels.dtype == torch.float32 and labels.dtype == torch.int64
    assert float(pixels.min()) >= 0 and float(pixels.max()) <= 1
    for img, lab in zip(pixels.numpy(), labels.numpy()):
        square, disc = lab == 1, lab == 2
        ys, xs = np.nonzero(square)
        side = ys.max() - ys.min() + 1
        assert (
            xs.max() - xs.min() + 1 == side and square.sum() == side * side and 7 <= side <= 12
        )  # a filled square
        ys, xs = np.nonzero(disc)
        d = ys.max() - ys.min() + 1
        assert (
            8 <= d <= 12 and abs(disc.sum() - np.pi * d * d / 4) < 0.15 * d * d
        )  # about a disc's area
        assert disc.sum() < 0.9 * d * d  # not a square
        for mask in (square, disc):  # one flat colour per shape, brighter than any background pixel
            colours = img[:, mask]
            assert np.ptp(colours, axis=1).max() == 0 and colours.min() >= 0.5
        assert img[:, lab == 0].max() <= 0.4
        # one background pixel at least between the shapes
        grown = np.zeros_like(square)
        ys, xs = np.nonzero(square)
        grown[max(ys.min() - 1, 0) : ys.max() + 2, max(xs.min() - 1, 0) : xs.max() + 2] = True
        assert not (grown & disc).any()


def test_shapes_are_seeded() -> None:
    a, la = seg.make_shapes(5, seed=4)
    b, lb = seg.make_shapes(5, seed=4)
    c, _ = seg.make_shapes(5, seed=5)
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)
    with pytest.raises(BadInputError, match="n=0"):
        seg.make_shapes(0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("seg-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONVLENS_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def trained(cache: Path) -> tuple[nn.Module, dict[str, Any]]:
    return seg.get_trained()


def test_trained_net_segments_unseen_shapes(trained: tuple[nn.Module, dict[str, Any]]) -> None:
    module, meta = trained
    pixels, labels = seg.make_shapes(300, seed=123)  # neither the training nor the held-out seed
    with torch.no_grad():
        pred = module(seg.normalize(pixels)).argmax(1)
    miou = _np_miou(pred.numpy(), labels.numpy())
    assert miou >= MIOU_FLOOR, miou
    assert seg.mean_iou(pred, labels) == pytest.approx(miou, abs=1e-9)
    all_background = _np_miou(np.zeros_like(labels.numpy()), labels.numpy())
    assert all_background < 0.3  # the floor is far above a trivial answer
    assert meta["held_out_miou"] >= seg.MIN_MIOU and meta["train_size"] == 1400


def test_cache_hit_and_damaged_file(
    trained: tuple[nn.Module, dict[str, Any]], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, meta = trained
    weights, sidecar = seg.cache_paths()
    assert (
        weights.parent == cache
        and json.loads(sidecar.read_text())["sha256"] == file_sha256(weights) == meta["sha256"]
    )
    calls: list[int] = []
    real = seg._train
    monkeypatch.setattr(seg, "_train", lambda progress: calls.append(1) or real(progress))
    again, _ = seg.get_trained()
    assert calls == [] and all(
        torch.equal(a, b) for a, b in zip(again.state_dict().values(), module.state_dict().values())
    )
    backup = weights.read_bytes()
    try:
        weights.write_bytes(backup[:-10] + b"0123456789")  # same size, other bytes
        monkeypatch.setattr(seg, "_train", lambda progress: calls.append(1) or (module, dict(meta)))
        seg.get_trained()
        assert calls == [1]  # the hash did not match: retrained (stubbed) and rewritten
        assert json.loads(sidecar.read_text())["sha256"] == file_sha256(weights)
    finally:
        weights.write_bytes(backup)
        sidecar.write_text(json.dumps({**meta, "sha256": file_sha256(weights)}))


def test_zoo_model_round_trips_a_png(
    trained: tuple[nn.Module, dict[str, Any]], tmp_path: Path
) -> None:
    from PIL import Image

    model = convlens.load_model("shapes_segnet")
    assert model.labels is not None and [model.labels.name(i) for i in range(3)] == [
        "background",
        "square",
        "disc",
    ]
    assert model.input_size == (32, 32) and model.info["held_out_miou"] >= seg.MIN_MIOU
    pixels, labels = seg.make_shapes(1, seed=9)
    path = tmp_path / "shapes.png"
    Image.fromarray((pixels[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
    batch = model.prepare([str(path)])
    out = model.module(batch.x)
    assert out.shape == (1, 3, 32, 32)
    quantised = torch.round(pixels * 255) / 255
    torch.testing.assert_close(out, model.module(seg.normalize(quantised)))
    assert (out.argmax(1) == labels).float().mean() > 0.95
