"""The optimisation engine and the visualisations on tiny models: the objective rises, the
model is left as it was, L-BFGS finds a known optimum, settings are validated, runs are
seeded, periodic operations act, and class/neuron/layer visualisation do what they say."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import convlens
from convlens.errors import BadInputError
from convlens.optimize import (
    FourierParam,
    Objective,
    PixelParam,
    channel,
    class_score,
    diversity,
    evaluate_objective,
    feature_distance,
    jitter,
    optimize,
    random_rotate,
    visualize_class,
    visualize_layer,
    visualize_neuron,
)

from helpers.tiny import TinyConvNet, assert_unchanged, module_hook_count, snapshot, tiny_model


@pytest.mark.parametrize("param", ["pixel", "fourier"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_class_score_rises(param: str, optimizer: str) -> None:
    model = tiny_model(seed=3)
    lr = 0.05 if optimizer == "adam" else 2.0
    result = optimize(
        model, class_score(2), param, steps=40, lr=lr, optimizer=optimizer, generator=0
    )
    history = result["history"]
    assert history.shape == (40,)
    start, end = history[:5].mean().item(), history[-5:].mean().item()
    assert end > start + 1.0, (start, end)
    # the final image, seen without transforms, scores as well as the last steps did
    with torch.no_grad():
        logits = model.module(model.normalize(result["image"]))
    torch.testing.assert_close(result["values"], logits[:, 2])
    assert result["values"].item() > start + 1.0


def test_result_shape_kind_provenance_plot_and_save(tmp_path: Path) -> None:
    model = tiny_model(seed=4)
    objective = class_score(1) - 0.01 * channel("relu1", 2)
    result = optimize(
        model, objective, steps=6, batch=3, generator=5, snapshot_every=2, blur_every=3
    )
    image = result["image"]
    assert result.kind == "optimized" and result.value is image
    assert image.shape == (3, 3, 16, 16) and image.min() >= 0 and image.max() <= 1
    assert result["snapshots"].shape == (4, 3, 3, 16, 16)
    assert result["snapshot_steps"].tolist() == [0, 2, 4, 6]
    torch.testing.assert_close(result["snapshots"][-1], image)
    prov = result.provenance
    assert prov["objective"] == "class_score(1) - 0.01*channel(relu1:2)"
    assert prov["seed"] == 5 and prov["model"] == "tiny-conv" and prov["layer"] == "relu1"
    settings = prov["params"]
    assert settings["steps"] == 6 and settings["lr"] == 0.05 and settings["optimizer"] == "adam"
    assert (
        settings["batch"] == 3
        and settings["image_size"] == [16, 16]
        and settings["blur_every"] == 3
    )
    assert settings["param"].startswith("fourier") and settings["transforms"].startswith(
        "compose([jitter(1)"
    )
    assert result.display is None and result.originals is not None and len(result.originals) == 3
    assert result.to_png().startswith(b"\x89PNG")
    loaded = convlens.Result.load(result.save(tmp_path / "run"))
    assert loaded.kind == "optimized" and loaded.provenance["objective"] == prov["objective"]
    for key in ("image", "history", "values", "snapshots", "snapshot_steps"):
        assert torch.equal(loaded[key], result[key].cpu()), key


def test_model_is_left_unchanged_without_grads_and_hooks() -> None:
    model = tiny_model(seed=5)
    model.module.train()  # a user's model in training mode stays in training mode
    before = snapshot(model.module)
    optimize(model, class_score(0) + channel("relu2", 1), steps=5)
    assert module_hook_count(model.module) == 0
    assert_unchanged(model.module, before)  # BatchNorm statistics too: the engine runs in eval mode
    assert all(p.grad is None for p in model.module.parameters())


def test_hooks_are_removed_and_flags_restored_after_an_exception() -> None:
    model = tiny_model(seed=6)
    before = snapshot(model.module)
    calls = []

    def explode(ctx):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return ctx.acts["relu1"].mean(dim=(1, 2, 3))

    with pytest.raises(RuntimeError, match="boom"):
        optimize(model, Objective(explode, ["relu1"], "explode"), steps=10)
    assert module_hook_count(model.module) == 0
    assert_unchanged(model.module, before)
    assert all(p.grad is None for p in model.module.parameters())


def test_same_seed_same_images_other_seed_other_images() -> None:
    model = tiny_model(seed=7)
    run = lambda g: optimize(model, class_score(3), steps=8, batch=2, generator=g)["image"]  # noqa: E731
    a = run(11)
    assert torch.equal(a, run(11))
    assert torch.equal(a, run(torch.Generator().manual_seed(11)))
    assert not torch.equal(a, run(12))


def test_progress_is_called_once_per_step() -> None:
    seen: list[tuple[int, int]] = []
    optimize(
        tiny_model(),
        class_score(0),
        steps=7,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(i, 7) for i in range(1, 8)]


class IdentityNet(nn.Module):
    """Exposes its (normalised) input as layer ``inp``; a feature distance there is convex."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Identity()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.inp(x).mean(dim=(2, 3)))


def test_lbfgs_reaches_the_known_optimum() -> None:
    model = convlens.wrap(IdentityNet().double(), input_size=8, mean=0.5, std=0.25, resize=None)
    target = (
        torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        * 0.8
        + 0.1
    )
    objective = feature_distance("inp", model.normalize(target))  # maximum 0 at image == target
    param = PixelParam((2, 3, 8, 8), torch.Generator().manual_seed(1), dtype=torch.float64)
    result = optimize(model, objective, param, steps=30, optimizer="lbfgs")
    settings = result.provenance["params"]
    assert settings["transforms"] == "none" and settings["lr"] == 1.0  # L-BFGS defaults
    torch.testing.assert_close(result["image"], target, atol=1e-4, rtol=0)
    assert result["values"].abs().max() < 1e-9
    # Adam with the same budget is far from it: the test can tell the optimisers apart
    adam = optimize(
        model,
        objective,
        PixelParam((2, 3, 8, 8), torch.Generator().manual_seed(1), dtype=torch.float64),
        steps=30,
        optimizer="adam",
        transforms=[],
    )
    assert (adam["image"] - target).abs().max() > 1e-3


def test_lbfgs_refuses_random_transforms() -> None:
    with pytest.raises(BadInputError, match="lbfgs") as info:
        optimize(tiny_model(), class_score(0), steps=2, optimizer="lbfgs", transforms=[jitter(1)])
    assert "\n" not in str(info.value)
    optimize(
        tiny_model(), class_score(0), steps=2, optimizer="lbfgs", transforms=[random_rotate([0.0])]
    )  # not random: fine


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"lr": 0}, "lr"),
        ({"lr": -0.1}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"batch": 0}, "batch"),
        ({"blur_sigma": 0}, "blur_sigma"),
        ({"blur_every": -1}, "blur_every"),
        ({"clip_pixels_percentile": 100}, "clip_pixels_percentile"),
        ({"clip_grads_percentile": -1}, "clip_grads_percentile"),
        ({"snapshot_every": -2}, "snapshot_every"),
        ({"param": "wavelet"}, "param"),
        ({"transforms": "jitter"}, "transforms"),
        ({"generator": "seed"}, "generator"),
        ({"image_size": (8,)}, "image_size"),
        ({"progress": 3}, "progress"),
        ({"param": PixelParam((2, 3, 16, 16)), "batch": 3}, "batch"),
        ({"param": PixelParam((1, 1, 16, 16))}, "channels"),
    ],
)
def test_bad_arguments_raise_one_line(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(BadInputError, match=match) as info:
        optimize(tiny_model(), class_score(0), **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_clip_pixels_and_grads_act() -> None:
    model = tiny_model(seed=8)
    result = optimize(
        model,
        class_score(1),
        "pixel",
        steps=4,
        clip_pixels_percentile=60,
        clip_pixels_every=4,
        transforms=[],
    )
    grey = ((result["image"] - 0.5).abs() < 1e-6).all(dim=1).float().mean()
    assert grey >= 153 / 256  # the pixels below the 60th percentile (153 of 256) were set to grey
    # with 90% of the gradient clipped, one SGD step moves at most ~10% of the pixels
    start = PixelParam((1, 3, 16, 16), torch.Generator().manual_seed(2))
    initial = start().detach().clone()
    moved = optimize(
        model,
        class_score(1),
        start,
        steps=1,
        optimizer="sgd",
        lr=1.0,
        clip_grads_percentile=90,
        transforms=[],
    )["image"]
    changed = ((moved - initial).abs() > 0).any(dim=1).float().mean()
    assert 0 < changed <= 0.11


def test_blur_smooths_the_image() -> None:
    model = tiny_model(seed=9)

    def roughness(image: torch.Tensor) -> float:
        return (image[..., 1:, :] - image[..., :-1, :]).abs().mean().item()

    sharp = optimize(model, class_score(4), "pixel", steps=20, lr=0.2, transforms=[], generator=1)[
        "image"
    ]
    blurred = optimize(
        model,
        class_score(4),
        "pixel",
        steps=20,
        lr=0.2,
        transforms=[],
        generator=1,
        blur_every=1,
        blur_sigma=1.0,
    )["image"]
    assert roughness(blurred) < 0.5 * roughness(sharp)


def test_image_size_and_float64_follow_the_model() -> None:
    net = TinyConvNet(seed=1).double().eval()
    model = convlens.wrap(net, input_size=16, mean=0.5, std=0.25, resize=None)
    result = optimize(model, class_score(0), steps=2, image_size=(12, 20))
    assert result["image"].shape == (1, 3, 12, 20) and result["image"].dtype == torch.float64


# -- visualisations ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits() -> convlens.Model:
    """The small trained digits CNN (8x8 grayscale, trained on first use, cached)."""
    return convlens.load_model("digits_cnn")


def test_visualize_class_reaches_top1_for_every_digit_in_one_batch(digits: convlens.Model) -> None:
    result = visualize_class(digits, list(range(10)), steps=40)
    assert result["image"].shape == (10, 1, 8, 8)  # grayscale: Fourier without colour matrix
    assert result["target"].tolist() == list(range(10))
    assert result["top1"].tolist() == list(range(10)) and result.provenance["success"] is True
    assert result.provenance["method"] == "visualize_class"
    with torch.no_grad():
        pixels = (result["image"] * 255 + 0.5).floor() / 255  # what a saved 8-bit PNG gives back
        probs = digits.module(digits.normalize(pixels)).double().softmax(dim=1)
    torch.testing.assert_close(result["target_probability"], probs.diagonal(), atol=1e-6, rtol=0)
    assert (result["target_probability"] > 0.5).all()
    with pytest.raises(BadInputError):
        visualize_class(digits, [0, 1], batch=2)


def test_visualize_class_by_label_with_batch(digits: convlens.Model) -> None:
    label = digits.labels.name(7)
    result = visualize_class(digits, label, batch=2, steps=40, param="pixel", seed=3)
    assert result.provenance["target"] == [{"class": 7, "label": label}] * 2
    assert result["top1"].tolist() == [7, 7]
    assert result.provenance["top1"][0]["label"] == label and result.provenance["seed"] == 3
    assert not torch.equal(result["image"][0], result["image"][1])


def test_visualize_layer_gives_each_channel_its_own_image() -> None:
    model = tiny_model(seed=12)
    channels = [0, 2, 3, 5]
    result = visualize_layer(model, "conv2", channels, steps=30)
    assert result["image"].shape == (4, 3, 16, 16)
    assert result["channels"].tolist() == channels
    with torch.no_grad():
        act = evaluate_objective(
            model,
            Objective(lambda ctx: ctx.acts["conv2"].mean(dim=(2, 3))[:, 0], ["conv2"]),
            result["image"],
        )
        means = torch.stack(
            [evaluate_objective(model, channel("conv2", c), result["image"]) for c in channels],
            dim=1,
        )
    assert act.shape == (4,)
    # image b is the best of the batch at channel b: each column's maximum is on the diagonal
    assert means.argmax(dim=0).tolist() == [0, 1, 2, 3]
    with pytest.raises(BadInputError):
        visualize_layer(model, "conv2", [])


def test_visualize_neuron_unit_channel_and_diversity() -> None:
    model = tiny_model(seed=13)
    unit = visualize_neuron(model, "conv1", 1, 3, 4, steps=5)
    assert unit.provenance["objective"] == "neuron(conv1:1[3,4])"
    assert unit.provenance["target"] == {"layer": "conv1", "channel": 1, "y": 3, "x": 4}
    plain = visualize_neuron(model, "relu1", 2, batch=3, steps=30, param="pixel", transforms=[])
    varied = visualize_neuron(
        model, "relu1", 2, batch=3, steps=30, param="pixel", transforms=[], diversity=5.0
    )
    assert varied.provenance["objective"] == "channel(relu1:2) + 5*diversity(relu1)"

    def similarity(images: torch.Tensor) -> float:
        with torch.no_grad():
            return -evaluate_objective(model, diversity("relu1"), images)[0].item()

    assert similarity(varied["image"]) < similarity(plain["image"]) - 0.05
    with pytest.raises(BadInputError, match="batch"):
        visualize_neuron(model, "relu1", 2, diversity=1.0)
    with pytest.raises(BadInputError):
        visualize_neuron(model, "relu1", 2, 3)


def test_fourier_param_from_image_starts_where_it_is_told() -> None:
    model = tiny_model(seed=14)
    start = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 0.8 + 0.1
    result = optimize(
        model,
        class_score(0),
        FourierParam.from_image(start),
        steps=1,
        lr=1e-6,
        transforms=[],
        snapshot_every=1,
    )
    torch.testing.assert_close(result["snapshots"][0], start, atol=1e-5, rtol=0)
    torch.testing.assert_close(result["image"], start, atol=1e-3, rtol=0)
