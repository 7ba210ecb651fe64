"""attack(), the curve and transfer: round trip, success definition, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.helpers.tiny import assert_unchanged, module_hook_count, snapshot, tiny_model

import convlens
from convlens.adversarial import attack, attack_curve, fgsm, pgd, pixel_forward, transfer_table
from convlens.data.images import save_image
from convlens.errors import BadInputError


def test_attack_result_round_trips_through_png(tmp_path: Path, digits: tuple) -> None:
    model, x, y = digits
    result = attack(model, x[:8], "pgd", eps=0.2, steps=10, labels=y[:8])
    t = result.tensors
    assert t["adversarial"].shape == x[:8].shape
    torch.testing.assert_close(t["perturbation"], t["adversarial"] - t["original"])
    assert float(t["linf"].max()) <= 0.2 + 1e-6
    for i in range(8):
        path = save_image(t["adversarial"][i], tmp_path / f"{i}.png")
        predicted = model.predict([str(path)], top_k=1)[0].classes[0]
        assert predicted == int(t["top_classes_after"][i, 0])
        assert bool(t["success"][i]) == (predicted != int(y[i]))
    assert result.provenance["params"]["method"] == "pgd"
    loaded = convlens.Result.load(result.save(tmp_path / "r"))
    assert torch.equal(loaded.tensors["adversarial"], t["adversarial"])


def test_targeted_attack_reports_success_on_the_target(digits: tuple) -> None:
    model, x, _ = digits
    goal = 3
    result = attack(model, x[:10], "pgd", eps=0.4, steps=30, target=goal)
    after = result["top_classes_after"][:, 0]
    assert torch.equal(result["success"], after == goal)
    assert int(result["success"].sum()) >= 8


def test_model_untouched_and_seeded() -> None:
    model = tiny_model()
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    before = snapshot(model.module)
    a = attack(model, x, "pgd", eps=8 / 255, seed=3)
    b = attack(model, x, "pgd", eps=8 / 255, seed=3)
    c = attack(model, x, "square", eps=8 / 255, steps=50, seed=3)
    assert torch.equal(a["adversarial"], b["adversarial"])
    assert c["queries"].dtype == torch.long
    assert_unchanged(model.module, before)
    assert module_hook_count(model.module) == 0


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"method": "nope"}, "choose from"),
        ({"method": "cw", "eps": 1 / 255}, "drop eps"),
        ({"method": "square", "norm": "2"}, "norm 2"),
        ({"method": "pgd", "eps": 2.0}, "[0, 1]"),
        ({"method": "pgd", "steps": 0}, "steps"),
        ({"method": "deepfool", "target": 1}, "untargeted"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict, needle: str) -> None:
    model = tiny_model()
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(BadInputError, match=None) as info:
        attack(model, x, **kwargs)
    assert needle in str(info.value)


def test_curve_clean_point_and_ordering(digits: tuple) -> None:
    model, x, y = digits
    result = attack_curve(model, x, y, methods=["fgsm", "pgd"], eps=[0, 0.1, 0.3], steps=10)
    acc = result["accuracy"]
    with torch.no_grad():
        clean = float((model.module(model.normalize(x)).argmax(dim=1) == y).float().mean())
    assert float(acc[0, 0]) == pytest.approx(clean) and float(acc[1, 0]) == pytest.approx(clean)
    # independent check of one point: FGSM at 0.1 by hand
    forward = pixel_forward(model)
    with torch.no_grad():
        hand = float((forward(fgsm(forward, x, y, 0.1)).argmax(dim=1) == y).float().mean())
    assert abs(float(acc[0, 1]) - hand) <= 2 / len(y)  # 8-bit rounding may flip an image
    assert float(acc[1, 2]) <= float(acc[0, 2])  # PGD at least as strong as FGSM
    assert float(acc[1, 2]) < float(acc[1, 1]) <= clean


def test_transfer_to_itself_equals_the_white_box_rate() -> None:
    source = tiny_model(seed=0)
    other = tiny_model(seed=0)
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = source.module(source.normalize(x)).argmax(dim=1)
    table = transfer_table(source, [other], list(x), y, eps=8 / 255, steps=5)
    assert torch.equal(table["fooled"][0], table["fooled"][1])
    assert float(table["rate"][0]) == float(table["rate"][1])
    # and pgd() itself, run by hand, fools the same images
    adv = pgd(
        pixel_forward(source),
        torch.round(x * 255) / 255,
        y,
        8 / 255,
        steps=5,
        generator=torch.Generator().manual_seed(0),
    )
    assert adv.shape == x.shape
