"""Acceptance of issue 17 parts 4 and 2 on the real models and data.

- Fooling images from noise (Nguyen, Yosinski & Clune 2015): on EfficientNet-Lite0, for four
  classes and both encodings (free pixels from uniform noise; a CPPN pattern), the 8-bit PNG
  read back is the target with >= 99 %; the noise images stay within a few levels of their
  start noise; `convlens fool --from noise` + `convlens predict` agree.
- Channel importance: removing the least important channels first keeps accuracy above
  random orders at the same count, on the digits model (ranked on 300 training digits,
  measured on the 359 held-out ones) and on Lite0 with the 20 labelled foolbox ImageNet
  photos (ranked and measured on the same 20: in-sample, stated), also through
  `convlens channels` on Lite0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import convlens
from convlens.cli.main import main
from convlens.data.images import load_image, save_image
from convlens.data.samples import labelled_imagenet_files
from convlens.inspect.channels import channel_importance, pruning_curve
from convlens.models.small import load_dataset
from convlens.optimize.fool import fool_from_noise

pytestmark = pytest.mark.acceptance

TARGETS = (1, 130, 409, 985)  # goldfish, flamingo, analog clock, daisy


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one torch thread (the ``one_thread`` fixture in tests/conftest.py)."""


def _roughness(x: torch.Tensor) -> float:
    return float((x[..., 1:] - x[..., :-1]).abs().mean())


@pytest.mark.parametrize("pattern", ["noise", "pattern"])
def test_fooling_images_from_noise_on_lite0(
    lite0: convlens.Model, pattern: str, tmp_path: Path
) -> None:
    for target in TARGETS:
        result = fool_from_noise(lite0, target, pattern=pattern, seed=0)
        p = result.provenance["params"]
        print(
            f"\n{pattern} -> {target} {lite0.labels.name(target)}: {p['probability']:.4f} in {p['steps']} steps, {p['seconds']:.1f} s, mean change {p['mean_change'] * 255:.1f}/255"
        )
        assert p["success"] and p["predicted"] == target and p["probability"] >= 0.99
        start_prob = float(result.tensors["start_probabilities"][target])
        assert start_prob < 0.1  # the start was not the class: the ascent made it one
        path = save_image(result.tensors["image"][0], tmp_path / f"{pattern}_{target}.png")
        probs = torch.softmax(lite0.logits(lite0.prepare([load_image(path)]).x), dim=1)[0]
        assert int(probs.argmax()) == target and float(probs[target]) >= 0.99
        image = result.tensors["image"]
        if pattern == "noise":  # still uniform noise to the eye: a few levels from the start
            assert p["mean_change"] < 12 / 255
            start_roughness = _roughness(result.tensors["start"])  # uniform noise: E|u - v| = 1/3
            assert start_roughness > 0.3 and _roughness(image) > 0.9 * start_roughness
        else:  # a smooth pattern, far from pixel noise
            assert _roughness(image) < 0.1


def test_fool_from_noise_cli_and_predict_agree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fool"
    assert main(["fool", "--from", "pattern", "--target", "daisy", "-o", str(out), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert (
        payload["success"]
        and payload["predicted"]["class"] == 985
        and payload["probability"] >= 0.99
    )
    assert main(["predict", payload["files"]["fooled"], "--json", "--top-k", "1"]) == 0
    top = json.loads(capsys.readouterr().out)["predictions"][0]["top"][0]
    assert top["class"] == 985 and top["probability"] == pytest.approx(
        payload["probability"], abs=1e-5
    )


def _curves(
    model: convlens.Model,
    rank_x: torch.Tensor,
    rank_y: torch.Tensor,
    eval_x: torch.Tensor,
    eval_y: torch.Tensor,
    layer: str,
) -> dict[str, torch.Tensor]:
    orders = {
        m: channel_importance(model, rank_x, layer, method=m, labels=rank_y)["order"].flip(0)
        for m in ("ablation", "activation", "taylor")
    }
    curve = pruning_curve(model, eval_x, eval_y, layer, orders, random_orders=10, seed=0)
    names, counts = curve.provenance["params"]["names"], curve["counts"].tolist()
    print(f"\n{model.name} {layer}: accuracy, least important channels removed first")
    print(f"{'removed':>8s}" + "".join(f"{n:>11s}" for n in names))
    for j, k in enumerate(counts):
        print(f"{k:8d}" + "".join(f"{float(row[j]):11.3f}" for row in curve["accuracy"]))
    print(
        "mean "
        + ", ".join(f"{n} {float(row.mean()):.3f}" for n, row in zip(names, curve["accuracy"]))
    )
    return dict(zip(names, curve["accuracy"]))


@pytest.mark.parametrize("layer", ["act1", "act3"])
def test_digits_pruning_in_importance_order_beats_random(layer: str) -> None:
    model = convlens.load_model("digits_cnn")
    train_x, train_y = load_dataset("digits", "train")
    test_x, test_y = load_dataset("digits", "test")
    acc = _curves(model, train_x[:300], train_y[:300], test_x, test_y, layer)
    random = acc["random"]
    for method in (
        "ablation",
        "taylor",
    ):  # the mean activation is printed, not asserted: on act1 it is worse than random
        assert float(acc[method].mean()) >= float(random.mean()) + 0.05, method
        assert bool((acc[method] >= random - 0.03).all()), (method, acc[method], random)


def test_lite0_pruning_in_importance_order_beats_random(
    lite0: convlens.Model, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = labelled_imagenet_files()
    if len(files) != 20:
        pytest.skip("the foolbox wheel's 20 ImageNet photos are not installed")
    paths, labels = [str(p) for p, _ in files], torch.tensor([y for _, y in files])
    pixels = lite0.denormalize(lite0.prepare(paths).x)
    acc = _curves(lite0, pixels, labels, pixels, labels, "blocks.15")
    random = acc["random"]
    for method in ("ablation", "taylor", "activation"):
        assert float(acc[method].mean()) >= float(random.mean()) + 0.03, method
    assert bool((acc["ablation"] >= random - 0.05).all())

    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\n" + "".join(f"{p},{y}\n" for p, y in zip(paths, labels.tolist())))
    capsys.readouterr()
    args = [
        "channels",
        str(csv),
        "--layer",
        "blocks.15",
        "--methods",
        "ablation",
        "--random",
        "10",
        "-o",
        str(tmp_path / "out"),
        "--json",
    ]
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    lib = channel_importance(lite0, pixels, "blocks.15", method="ablation", labels=labels)
    assert payload["rankings"]["ablation"]["order"][:20] == lib["order"][:20].tolist()
    curve = payload["curve"]["accuracy"]
    assert (
        sum(curve["ablation"]) / len(curve["ablation"])
        >= sum(curve["random"]) / len(curve["random"]) + 0.03
    )
