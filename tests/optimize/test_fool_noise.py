"""Fooling images from noise and from CPPN patterns (Nguyen et al. 2015) on tiny models:
the first Adam step by hand, the CPPN against a NumPy forward, >= 99 % after the PNG round
trip (library and ``convlens fool --from`` + ``convlens predict``), bad input."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch

import convlens
from convlens.cli import cmd_fool, cmd_predict
from convlens.cli.main import main
from convlens.data.images import load_image, quantize_8bit, save_image
from convlens.errors import BadInputError
from convlens.optimize.cppn import CPPNParam
from convlens.optimize.fool import fool_from_noise
from convlens.optimize.param import PixelParam

from helpers.tiny import assert_unchanged, module_hook_count, snapshot, tiny_model


def _probs(model: convlens.Model, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model.module(model.normalize(pixels)), dim=1)[0]


def _confident() -> convlens.Model:
    """The tiny net with its logits scaled up, so >= 99 % is within reach (ReLU6 bounds them)."""
    model = tiny_model()
    with torch.no_grad():
        model.module.fc.weight.mul_(8)
        model.module.fc.bias.mul_(8)
    return model


def test_first_step_is_adam_on_the_log_probability_by_hand() -> None:
    model = tiny_model()
    # one step, and a threshold it cannot reach: the image is the 8-bit start after one step
    result = fool_from_noise(model, 2, steps=1, lr=0.3, seed=4, min_probability=0.999999)
    noise = torch.rand(
        (1, 3, 16, 16), generator=torch.Generator().manual_seed(4), dtype=torch.float64
    ).float()
    logits = PixelParam.from_image(noise).logits.detach().clone().requires_grad_(True)
    log_p = torch.log_softmax(model.module(model.normalize(torch.sigmoid(logits))), dim=1)[0, 2]
    (g,) = torch.autograd.grad(log_p, logits)
    # Adam's first update: m / (sqrt(v) + eps) with bias correction is g / (|g| + eps)
    expected = torch.sigmoid(logits.detach() + 0.3 * g / (g.abs() + 1e-8))
    torch.testing.assert_close(
        result.tensors["image"], quantize_8bit(expected), rtol=0, atol=1 / 255 + 1e-6
    )
    assert (
        float(
            (result.tensors["image"] - quantize_8bit(expected)).abs().gt(0.5 / 255).float().mean()
        )
        < 0.01
    )
    torch.testing.assert_close(result.tensors["start"], quantize_8bit(noise))
    assert result.provenance["params"]["steps"] == 1 and len(result.tensors["history"]) == 1


def test_cppn_image_equals_a_numpy_forward() -> None:
    param = CPPNParam((2, 3, 5, 7), torch.Generator().manual_seed(0), width=4, depth=3)
    with torch.no_grad():
        for b in param.biases:
            b.normal_(0, 0.5)
    ys, xs = np.meshgrid(
        np.linspace(-1, 1, 5) * np.sqrt(3), np.linspace(-1, 1, 7) * np.sqrt(3), indexing="ij"
    )
    coords = np.stack([xs, ys, np.hypot(xs, ys)], -1).reshape(35, 3)
    image = param().detach().numpy()
    for k in range(2):
        h = coords
        weights = [w.detach().double().numpy()[k] for w in param.weights]
        biases = [b.detach().double().numpy()[k] for b in param.biases]
        for w, b in zip(weights[:-1], biases[:-1]):
            z = h @ w + b
            h = np.concatenate([np.tanh(z), np.sin(z)], axis=1)
        out = 1 / (1 + np.exp(-(h @ weights[-1] + biases[-1])))  # (35, 3)
        np.testing.assert_allclose(image[k], out.T.reshape(3, 5, 7), rtol=1e-5, atol=1e-6)
    with pytest.raises(BadInputError, match="CPPN"):
        param.set_image(torch.rand(2, 3, 5, 7))


@pytest.mark.parametrize("pattern", ["noise", "pattern"])
@pytest.mark.parametrize("target", [1, 3])  # reachable by both encodings for this net
def test_fooling_image_keeps_99_percent_after_the_png_round_trip(
    tmp_path: Path, pattern: str, target: int
) -> None:
    model = _confident()
    before = snapshot(model.module)
    result = fool_from_noise(model, target, pattern=pattern, seed=2)
    p = result.provenance["params"]
    assert p["success"] and p["predicted"] == target and p["probability"] >= 0.99, p
    assert float(_probs(model, result.tensors["image"])[target]) == pytest.approx(
        p["probability"], abs=1e-6
    )
    image = result.tensors["image"]
    torch.testing.assert_close(image, quantize_8bit(image))
    reread = model.prepare([load_image(save_image(image[0], tmp_path / "fooled.png"))]).x
    probs = torch.softmax(model.logits(reread), dim=1)[0]
    assert int(probs.argmax()) == target and float(probs[target]) >= 0.99
    assert (
        float(result.tensors["start_probabilities"][target]) < 0.9
    )  # the start was not already it
    assert module_hook_count(model.module) == 0
    assert_unchanged(model.module, before)


def test_noise_stays_noise_and_a_pattern_is_smooth() -> None:
    """Direct encoding moves the uniform noise a little (the image is still noise: a pixel
    differs from its neighbour as much as in the start); the CPPN's image is smooth."""
    model = _confident()
    noise = fool_from_noise(model, 3, pattern="noise", seed=2)
    pattern = fool_from_noise(model, 3, pattern="pattern", seed=2)

    def roughness(x: torch.Tensor) -> float:
        return float((x[..., 1:] - x[..., :-1]).abs().mean())

    assert noise.provenance["params"]["mean_change"] < 0.15
    assert (
        roughness(noise.tensors["image"]) > 0.8 * roughness(noise.tensors["start"]) > 0.25
    )  # uniform noise: E|u - v| = 1/3
    assert roughness(pattern.tensors["image"]) < 0.5 * roughness(noise.tensors["image"])


def test_seed_repeats_and_changes_the_image() -> None:
    model = tiny_model()
    a = fool_from_noise(model, 1, seed=5, steps=5, min_probability=0.999999)
    b = fool_from_noise(model, 1, seed=5, steps=5, min_probability=0.999999)
    c = fool_from_noise(model, 1, seed=6, steps=5, min_probability=0.999999)
    assert torch.equal(a.tensors["image"], b.tensors["image"])
    assert not torch.equal(a.tensors["image"], c.tensors["image"])


def test_fool_from_noise_refuses_bad_input() -> None:
    model = tiny_model()
    with pytest.raises(BadInputError, match="pattern"):
        fool_from_noise(model, 1, pattern="fourier")
    with pytest.raises(BadInputError, match="min_probability"):
        fool_from_noise(model, 1, min_probability=1.0)
    with pytest.raises(BadInputError, match="steps"):
        fool_from_noise(model, 1, steps=0)
    with pytest.raises(convlens.errors.TargetError):
        fool_from_noise(model, "zebra")


def test_cli_fool_from_noise_is_predicted_as_the_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fool"
    assert (
        main(
            [
                "fool",
                "--from",
                "noise",
                "--model",
                "digits_cnn",
                "--target",
                "7",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, cmd_fool.SCHEMA)
    assert (
        payload["success"] and payload["predicted"]["class"] == 7 and payload["probability"] >= 0.99
    )
    assert {p.name for p in out.iterdir()} >= {"fooled.png", "start.png", "fool.png"}
    assert (
        main(
            [
                "predict",
                payload["files"]["fooled"],
                "--model",
                "digits_cnn",
                "--json",
                "--top-k",
                "1",
            ]
        )
        == 0
    )
    predicted = json.loads(capsys.readouterr().out)
    jsonschema.validate(predicted, cmd_predict.SCHEMA)
    top = predicted["predictions"][0]["top"][0]
    assert top["class"] == 7 and top["probability"] == pytest.approx(
        payload["probability"], abs=1e-5
    )


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["fool", "--from", "noise", "IMG.png", "--target", "3"], "IMAGE"),
        (["fool", "--target", "3"], "IMAGE"),
        (["fool", "--from", "pattern", "--target", "3", "--steps", "0"], "--steps"),
        (["fool", "--from", "noise", "--target", "eleven"], "eleven"),
    ],
)
def test_cli_bad_input_exits_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--model", "digits_cnn"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
