"""DeepDream and fooling images on tiny models: the step rule by hand, octaves raise the
objective, sizes kept, fooling images survive the 8-bit round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import convlens
from convlens.data.images import load_image, quantize_8bit, save_image
from convlens.errors import BadInputError, LayerNotFoundError
from convlens.optimize.dream import deep_dream
from convlens.optimize.fool import fool
from convlens.optimize.objectives import channel

from helpers.tiny import assert_unchanged, module_hook_count, snapshot, tiny_model


def _photo(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed)) * 0.6 + 0.2


def test_one_step_is_the_normalised_gradient_step_by_hand() -> None:
    model = tiny_model()
    image = _photo(16, 16)
    result = deep_dream(model, image, "relu2", octaves=1, steps=1, lr=0.05, jitter=0)
    x = image[None].clone().requires_grad_(True)
    with convlens.capture(model.module, ["relu2"]) as acts:
        model.module(model.normalize(x))
    (g,) = torch.autograd.grad(acts["relu2"].pow(2).mean(), x)
    expected = (image[None] + 0.05 * g / g.abs().mean()).clamp(0, 1)
    torch.testing.assert_close(result.tensors["image"], expected)


def test_every_octave_raises_the_layer_and_the_size_is_kept() -> None:
    model = tiny_model()
    before = snapshot(model.module)
    result = deep_dream(
        model,
        _photo(37, 53),
        "relu2",
        octaves=3,
        octave_scale=1.3,
        steps=6,
        lr=0.02,
        jitter=4,
        seed=1,
    )
    assert result.tensors["image"].shape == (1, 3, 37, 53)
    gained = result.tensors["objective_after"] - result.tensors["objective_before"]
    assert (gained > 0).all(), gained
    assert module_hook_count(model.module) == 0
    assert_unchanged(model.module, before)


def test_seeded_jitter_is_deterministic_and_tiles_cover_the_image() -> None:
    model = tiny_model()
    photo = _photo(40, 40)
    a = deep_dream(model, photo, "relu2", octaves=2, steps=3, jitter=5, seed=3, tile=32)
    b = deep_dream(model, photo, "relu2", octaves=2, steps=3, jitter=5, seed=3, tile=32)
    c = deep_dream(model, photo, "relu2", octaves=2, steps=3, jitter=5, seed=4, tile=32)
    torch.testing.assert_close(a.tensors["image"], b.tensors["image"])
    assert not torch.equal(a.tensors["image"], c.tensors["image"])
    assert (
        (a.tensors["image"] - photo[None]).abs().amax(dim=(0, 1)).gt(0).all()
    )  # every pixel moved: no tile left out


def test_any_objective_and_bad_arguments() -> None:
    model = tiny_model()
    result = deep_dream(
        model, _photo(16, 16), objective=channel("relu2", 3), octaves=1, steps=4, jitter=0
    )
    assert result.tensors["objective_after"][0] > result.tensors["objective_before"][0]
    with pytest.raises(LayerNotFoundError):
        deep_dream(model, _photo(16, 16), "relu9")
    with pytest.raises(BadInputError, match="not both"):
        deep_dream(model, _photo(16, 16), "relu2", objective=channel("relu2", 0))
    with pytest.raises(BadInputError, match="octave_scale"):
        deep_dream(model, _photo(16, 16), "relu2", octave_scale=0.5)
    with pytest.raises(BadInputError, match=r"\[0, 1\]"):
        deep_dream(model, _photo(16, 16) * 3, "relu2")


def _confident() -> convlens.Model:
    model = tiny_model()  # predicts class 4 with > 99 % on the photos below
    with torch.no_grad():
        model.module.fc.weight.mul_(8)
        model.module.fc.bias.mul_(8)
    return model


@pytest.mark.parametrize("target", [1, 3])  # reachable within 16/255 for this model
def test_fooling_image_is_the_target_after_the_png_round_trip(tmp_path: Path, target: int) -> None:
    model = _confident()
    pixels = model.denormalize(model.prepare(_photo(16, 16, seed=5)[None]).x)
    assert int(model.logits(model.normalize(pixels)).argmax()) == 4
    result = fool(model, pixels, target, min_probability=0.9)
    params = result.provenance["params"]
    assert params["success"] and params["predicted"] == target and params["probability"] >= 0.9
    image = result.tensors["image"]
    torch.testing.assert_close(image, quantize_8bit(image))  # already 8-bit levels
    assert params["linf"] <= params["budget"] + 0.5 / 255 + 1e-6  # the radius, plus 8-bit rounding
    torch.testing.assert_close(
        torch.tensor(params["linf"]), (image - pixels).abs().max(), rtol=0, atol=1e-6
    )
    path = save_image(image[0], tmp_path / "fooled.png")
    reread = model.prepare([load_image(path)]).x
    probs = torch.softmax(model.logits(reread), dim=1)[0]
    assert int(probs.argmax()) == target and float(probs[target]) >= 0.9


def test_fooling_keeps_the_smallest_budget_that_works() -> None:
    model = _confident()
    pixels = model.denormalize(model.prepare(_photo(16, 16, seed=5)[None]).x)
    easy = fool(model, pixels, 1, budgets=(8 / 255, 64 / 255)).provenance["params"]
    hard = fool(model, pixels, 1, budgets=(64 / 255,)).provenance["params"]
    assert easy["success"] and hard["success"]
    # the small radius sufficed, so the ladder never took the big steps the single radius takes
    assert easy["budget"] == 8 / 255 and easy["linf"] <= 8.5 / 255 + 1e-6
    assert hard["linf"] > easy["linf"]


def test_fool_refuses_bad_input() -> None:
    model = tiny_model()
    pixels = torch.full((3, 16, 16), 0.5)
    with pytest.raises(BadInputError, match="input"):
        fool(model, torch.full((3, 8, 8), 0.5), 1)
    with pytest.raises(BadInputError, match="min_probability"):
        fool(model, pixels, 1, min_probability=1.5)
    with pytest.raises(BadInputError, match="budgets"):
        fool(model, pixels, 1, budgets=(0.1, 0.05))
    with pytest.raises(convlens.errors.TargetError):
        fool(model, pixels, "zebra")
