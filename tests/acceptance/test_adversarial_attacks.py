"""Acceptance of issue 6, attacks (pytest -m acceptance).

- Untargeted PGD-20 at 1/255 L-inf fools >= 90 % of the foolbox-wheel ImageNet images that
  efficientnet_lite0 classifies correctly, counted by reading the saved PNGs back.
- PGD succeeds at least as often as FGSM at every budget (1, 2, 4, 8 / 255).
- digits_cnn: Square (L-inf 0.3) fools >= 90 % with a median <= 500 queries; ZOO fools
  >= 80 % within 20,000 queries; the one-pixel success rate over 100 digits is reported.
- Transfer table efficientnet_lite0 -> lite1 / lite2 (PGD-10, 4/255) is printed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import convlens
from convlens.adversarial import attack, attack_curve, transfer_table
from convlens.data.images import save_image
from convlens.data.samples import labelled_imagenet_files
from convlens.models.small import load_dataset

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def lite0() -> convlens.Model:
    return convlens.load_model("efficientnet_lite0")


@pytest.fixture(scope="module")
def imagenet() -> tuple[list[str], torch.Tensor]:
    files = labelled_imagenet_files()
    if not files:
        pytest.fail("foolbox is not installed: its 20 labelled ImageNet JPEGs are the test set")
    return [str(p) for p, _ in files], torch.tensor([label for _, label in files])


@pytest.fixture(scope="module")
def digits() -> tuple[convlens.Model, torch.Tensor, torch.Tensor]:
    model = convlens.load_model("digits_cnn")
    x, y = load_dataset("digits", "test")
    with torch.no_grad():
        ok = model.module(model.normalize(x)).argmax(dim=1) == y
    return model, x[ok][:100], y[ok][:100]


def test_pgd20_at_1_over_255_fools_90_percent_after_the_png_round_trip(
    lite0: convlens.Model, imagenet: tuple, tmp_path: Path
) -> None:
    paths, labels = imagenet
    result = attack(lite0, paths, "pgd", eps=1 / 255, steps=20, labels=labels, seed=0)
    assert float(result["linf"].max()) <= 1 / 255 + 1e-6
    fooled, correct = 0, 0
    for i in range(len(paths)):
        if int(result["top_classes_before"][i, 0]) != int(labels[i]):
            continue
        correct += 1
        png = save_image(result["adversarial"][i], tmp_path / f"{i}.png")
        predicted = lite0.predict([str(png)], top_k=1)[0].classes[0]
        assert predicted == int(
            result["top_classes_after"][i, 0]
        )  # the reported class is the file's
        fooled += predicted != int(labels[i])
    print(
        f"\nPGD-20 1/255: fooled {fooled} of {correct} correctly classified ({fooled / correct:.0%})"
    )
    assert correct >= 15
    assert fooled >= 0.9 * correct


def test_pgd_succeeds_at_least_as_often_as_fgsm_at_every_budget(
    lite0: convlens.Model, imagenet: tuple
) -> None:
    paths, labels = imagenet
    batch = lite0.prepare(paths)
    budgets = [0, 1 / 255, 2 / 255, 4 / 255, 8 / 255]
    curve = attack_curve(
        lite0,
        lite0.denormalize(batch.x),
        labels,
        methods=["fgsm", "pgd"],
        eps=budgets,
        steps=10,
        seed=0,
    )
    correct = curve["correct"]  # (method, eps, image)
    clean = correct[0, 0]
    rates = (~correct[:, 1:] & clean).sum(dim=2).float() / clean.sum()
    print(
        "\nsuccess among",
        int(clean.sum()),
        "clean-correct images; eps/255 =",
        [round(b * 255) for b in budgets[1:]],
    )
    print(
        "fgsm",
        [f"{float(r):.0%}" for r in rates[0]],
        "\npgd ",
        [f"{float(r):.0%}" for r in rates[1]],
    )
    assert bool((rates[1] >= rates[0]).all())
    assert float(rates[1, -1]) == 1.0


def test_square_on_digits(digits: tuple) -> None:
    model, x, y = digits
    result = attack(model, x, "square", eps=0.3, steps=5000, labels=y, seed=0, p_init=0.8)
    success = result["success"]
    median = float(result["queries"][success].float().median())
    print(
        f"\nSquare L-inf 0.3: {float(success.float().mean()):.0%} of {len(y)} digits, median {median:.0f} queries"
    )
    assert float(success.float().mean()) >= 0.9
    assert median <= 500
    assert float(result["linf"].max()) <= 0.3 + 1e-6


def test_zoo_on_digits(digits: tuple) -> None:
    model, x, y = digits
    result = attack(model, x, "zoo", steps=20000, labels=y, seed=0)
    success = result["success"]
    print(
        f"\nZOO: {float(success.float().mean()):.0%} of {len(y)} digits within 20,000 queries, median {float(result['queries'][success].float().median()):.0f}, L2 median {float(result['l2'][success].median()):.2f}"
    )
    assert int(result["queries"].max()) <= 20000
    assert float(success.float().mean()) >= 0.8


def test_one_pixel_on_100_digits_is_reported(digits: tuple) -> None:
    model, x, y = digits
    result = attack(model, x, "one-pixel", labels=y, seed=0)
    rate = float(result["success"].float().mean())
    changed = (result["perturbation"] != 0).any(dim=1).flatten(1).sum(dim=1)
    print(
        f"\none-pixel: {rate:.0%} of {len(y)} digits fooled, median {float(result['queries'].float().median()):.0f} queries"
    )
    assert len(y) == 100 and int(changed.max()) <= 1
    assert 0 <= rate <= 1


def test_transfer_table_lite0_to_lite1_and_lite2(lite0: convlens.Model, imagenet: tuple) -> None:
    paths, labels = imagenet
    targets = [convlens.load_model("efficientnet_lite1"), convlens.load_model("efficientnet_lite2")]
    table = transfer_table(
        lite0, targets, paths, labels, method="pgd", eps=4 / 255, steps=10, seed=0
    )
    names = table.provenance["params"]["models"]
    print(
        "\ntransfer of PGD-10 4/255 crafted on efficientnet_lite0 (images clean-correct on both):"
    )
    for name, rate, counted in zip(names, table["rate"], table["counted"]):
        print(f"  {name:20s} {float(rate):6.0%}  of {int(counted)}")
    assert float(table["rate"][0]) >= 0.9
    assert all(int(c) >= 10 for c in table["counted"])
