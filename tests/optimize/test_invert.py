"""Feature inversion on the tiny net: a code that determines the image gives the image back,
a deep code does not; PSNR by hand; ``invert_layers`` checks every name first and counts
progress over all layers; bad inputs are refused."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from convlens.errors import BadInputError, LayerNotFoundError
from convlens.optimize.invert import invert, invert_layers, psnr

from helpers.tiny import assert_unchanged, module_hook_count, snapshot, tiny_model

# the module, not the function ``convlens.optimize.invert`` that its package re-exports
invert_module = importlib.import_module("convlens.optimize.invert")


def _photos(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 0.8 + 0.1


def test_an_injective_code_gives_the_photo_back() -> None:
    """conv1 is a 3 -> 6 channel 3x3 convolution with padding: 1,536 linear equations in 768
    pixels, so (for these weights) only the photo itself has the photo's code. Without the
    TV prior, the reconstruction from a random start must therefore be the photo."""
    model = tiny_model()
    photos = _photos()
    kept = photos.clone()
    before = snapshot(model.module)
    result = invert(model, photos, "conv1", steps=200, tv_weight=0)
    image = result.tensors["image"]
    assert image.shape == photos.shape
    # the reported numbers, recomputed without the library: PSNR and the code's relative error
    mse = (image - photos).pow(2).flatten(1).mean(dim=1)
    torch.testing.assert_close(
        result.tensors["psnr"], 10 * torch.log10(1 / mse), rtol=1e-5, atol=1e-4
    )
    with torch.no_grad():
        code, got = (model.module.conv1(model.normalize(p)) for p in (photos, image))
    error = (got - code).flatten(1).norm(dim=1) / code.flatten(1).norm(dim=1)
    torch.testing.assert_close(result.tensors["relative_error"], error, rtol=1e-4, atol=1e-6)
    assert (result.tensors["psnr"] > 40).all(), result.tensors["psnr"]  # ~58 dB at 200 steps
    assert (error < 0.01).all(), error
    history = result.tensors["history"]
    assert history[0] < -0.1 and history[-1] > -1e-4  # from a random start, not the photo
    torch.testing.assert_close(photos, kept, rtol=0, atol=0)  # the input is not modified
    assert module_hook_count(model.module) == 0
    assert_unchanged(model.module, before)
    assert result.provenance["layer"] == "conv1" and result.provenance["params"]["tv_weight"] == 0


def test_a_deep_code_is_matched_but_the_photo_is_not_recovered() -> None:
    """relu2 keeps 8 x 8 x 8 = 512 clipped numbers of 768: inversion matches the code closely
    while the image stays far from the photo. An 'inversion' that pulled the pixels towards
    the photo instead of the code would pass the test above and fail this one."""
    model = tiny_model()
    photos = _photos()
    deep = invert(model, photos, "relu2", steps=200, tv_weight=0)
    assert (deep.tensors["relative_error"] < 0.2).all(), deep.tensors["relative_error"]  # ~0.09
    assert (deep.tensors["psnr"] < 20).all(), deep.tensors["psnr"]  # ~13 dB
    shallow = invert(model, photos, "relu1", steps=200, tv_weight=0)
    assert (shallow.tensors["psnr"] > deep.tensors["psnr"] + 10).all()  # ~30 dB: shallow keeps more


def test_the_tv_prior_is_part_of_the_objective() -> None:
    """With a large TV weight the optimum trades code error for smoothness: the result is
    smoother than the unregularised one and its code error larger (TV about 0.5x the
    unregularised result's, code error ~0.2 against ~0.005). With the prior's sign wrong
    (rewarding roughness) the TV grows instead."""
    model = tiny_model()
    photos = _photos(1)

    def tv(x: torch.Tensor) -> float:
        return float(
            (x[..., 1:, :] - x[..., :-1, :]).pow(2).sum()
            + (x[..., :, 1:] - x[..., :, :-1]).pow(2).sum()
        )

    plain = invert(model, photos, "conv1", steps=120, tv_weight=0)
    smooth = invert(model, photos, "conv1", steps=120, tv_weight=1.0)
    assert "total_variation" in smooth.provenance["params"]["objective"]
    assert "total_variation" not in plain.provenance["params"]["objective"]
    assert tv(smooth.tensors["image"]) < 0.75 * tv(plain.tensors["image"])
    assert smooth.tensors["relative_error"][0] > 3 * plain.tensors["relative_error"][0]


def test_psnr_by_hand() -> None:
    a = torch.zeros(3, 3, 4, 4)
    b = a.clone()
    b[0] += 0.1  # mse 0.01 -> 20 dB
    b[1, :, :2, :2] = 0.5  # a quarter of the pixels off by 0.5: mse 0.25 / 4 -> 10 log10(16) dB
    # b[2] == a[2]: mse 0, clamped to 1e-12 -> 120 dB, finite
    expected = torch.tensor([20.0, 10 * math.log10(16), 120.0])
    torch.testing.assert_close(psnr(b, a), expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(psnr(a, b), expected, rtol=1e-5, atol=1e-4)  # symmetric


def test_invert_layers_checks_every_name_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    calls: list[str] = []
    real = invert_module.optimize

    def spy(*args: object, **kwargs: object) -> object:
        calls.append("optimize")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(invert_module, "optimize", spy)
    ticks: list[tuple[int, int]] = []
    with pytest.raises(LayerNotFoundError, match="relu3"):
        invert_layers(
            model,
            _photos(1),
            ["conv1", "relu3"],
            steps=5,
            progress=lambda d, t: ticks.append((d, t)),
        )
    assert calls == [] and ticks == []  # conv1 is valid, but nothing ran before relu3 was refused


def test_invert_layers_counts_progress_over_all_layers() -> None:
    model = tiny_model()
    ticks: list[tuple[int, int]] = []
    results = invert_layers(
        model,
        _photos(1),
        ["conv1", "relu1", "relu2"],
        steps=4,
        tv_weight=0,
        progress=lambda d, t: ticks.append((d, t)),
    )
    assert ticks == [(k, 12) for k in range(1, 13)]
    assert [r.provenance["layer"] for r in results] == ["conv1", "relu1", "relu2"]
    assert all(r.tensors["history"].shape == (4,) for r in results)


def test_invert_layers_default_steps_match_invert() -> None:
    model = tiny_model()
    ticks: list[tuple[int, int]] = []
    invert_layers(model, _photos(1), ["conv1"], lr=0.1, progress=lambda d, t: ticks.append((d, t)))
    assert len(ticks) == 200 and ticks[-1] == (200, 200)


@pytest.mark.parametrize(
    ("pixels", "options", "error", "needle"),
    [
        (torch.rand(1, 3, 16, 16) * 2, {}, BadInputError, r"\[0, 1\]"),
        (torch.full((1, 3, 16, 16), float("nan")), {}, BadInputError, "finite"),
        (torch.rand(1, 3, 8, 8), {}, BadInputError, "shape"),
        (torch.rand(1, 1, 16, 16), {}, BadInputError, "shape"),
        (torch.rand(16, 16), {}, BadInputError, "pixels"),
        ([[0.5]], {}, BadInputError, "pixels"),
        (torch.rand(1, 3, 16, 16), {"tv_weight": -1.0}, BadInputError, "tv_weight"),
        (torch.rand(1, 3, 16, 16), {"tv_weight": float("inf")}, BadInputError, "tv_weight"),
        (torch.rand(1, 3, 16, 16), {"steps": 0}, BadInputError, "steps"),
        (torch.rand(1, 3, 16, 16), {"param": "wavelet"}, BadInputError, "wavelet"),
        (torch.rand(1, 3, 16, 16), {"layer": "conv9"}, LayerNotFoundError, "conv9"),
    ],
)
def test_bad_inputs_are_refused(
    pixels: object, options: dict[str, object], error: type[Exception], needle: str
) -> None:
    model = tiny_model()
    options = dict(options)
    layer = options.pop("layer", "conv1")
    ticks: list[int] = []
    with pytest.raises(error, match=needle):
        invert(model, pixels, layer, progress=lambda d, t: ticks.append(d), **options)  # type: ignore[arg-type]
    assert ticks == []
    assert module_hook_count(model.module) == 0
