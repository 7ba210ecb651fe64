"""``convlens visualize`` and ``convlens invert`` on the small digits model: what they report is
what the model says about what they wrote (recomputed here from the saved files), the JSON
validates, snapshots make a GIF and a filmstrip, and bad input exits 2 before any work."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from PIL import Image

import convlens
from convlens.cli import cmd_invert, cmd_predict, cmd_visualize
from convlens.cli.main import main
from convlens.data.images import quantize_8bit
from convlens.results import Result


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one torch thread (the ``one_thread`` fixture in tests/conftest.py)."""


@pytest.fixture(scope="module")
def digits() -> convlens.Model:
    return convlens.load_model("digits_cnn")


def _digit(path: Path) -> Path:
    image = np.full((8, 8), 30, dtype=np.uint8)
    image[1:7, 3:5] = 200  # a stroke: a "1"
    Image.fromarray(image).save(path)
    return path


def _json(capsys: pytest.CaptureFixture[str], schema: dict[str, object]) -> dict[str, object]:
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, schema)
    return payload  # type: ignore[no-any-return]


def _act2_means(model: convlens.Model, pixels: torch.Tensor) -> torch.Tensor:
    """Spatial means of every act2 channel, by calling the Sequential's first four modules."""
    with torch.no_grad():
        return model.module[:4](model.normalize(pixels)).mean(dim=(2, 3))


def test_class_image_is_predicted_as_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], digits: convlens.Model
) -> None:
    out = tmp_path / "three.png"
    assert (
        main(
            [
                "visualize",
                "class",
                "3",
                "--model",
                "digits_cnn",
                "--steps",
                "30",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    payload = _json(capsys, cmd_visualize.SCHEMA)
    assert (
        payload["kind"] == "class"
        and payload["steps"] == 30
        and payload["objective"] == "class_score(3)"
    )
    (row,) = payload["images"]  # type: ignore[misc]
    assert payload["success"] is True and row["top1"]["class"] == 3
    assert out.is_file() and Result.load(out.with_suffix("")).provenance["params"]["steps"] == 30
    # the saved 8-bit image, given back to `convlens predict`, gets the class and probability printed
    assert main(["predict", row["file"], "--model", "digits_cnn", "--json", "--top-k", "1"]) == 0
    top = _json(capsys, cmd_predict.SCHEMA)["predictions"][0]["top"][0]  # type: ignore[index]
    assert top["class"] == 3
    assert top["probability"] == pytest.approx(row["top1"]["probability"], abs=1e-5)
    assert row["target_probability"] == row["top1"]["probability"]
    # and the reported value is the class-3 logit of the final (unquantised) image
    image = Result.load(out.with_suffix("")).tensors["image"]
    with torch.no_grad():
        logit = digits.logits(digits.normalize(image))[0, 3]
    assert row["value"] == pytest.approx(float(logit), rel=1e-4)
    with torch.no_grad():
        grey = digits.logits(digits.normalize(torch.full_like(image, 0.5)))[0, 3]
    assert float(logit) > float(grey) + 1


def test_layer_makes_one_image_per_channel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], digits: convlens.Model
) -> None:
    out = tmp_path / "layer.png"
    assert (
        main(
            [
                "visualize",
                "layer",
                "act2",
                "--channels",
                "0-3",
                "--model",
                "digits_cnn",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    payload = _json(capsys, cmd_visualize.SCHEMA)
    assert [r["title"] for r in payload["images"]] == ["act2:0", "act2:1", "act2:2", "act2:3"]  # type: ignore[index, union-attr]
    assert payload["success"] is None
    image = Result.load(out.with_suffix("")).tensors["image"]
    assert image.shape == (4, 1, 8, 8)
    means = _act2_means(digits, image)[:, :4]  # (image b, channel c)
    values = torch.tensor([r["value"] for r in payload["images"]])  # type: ignore[union-attr]
    torch.testing.assert_close(
        values, means.diagonal(), rtol=1e-4, atol=1e-5
    )  # value b = channel b of image b
    grey = _act2_means(digits, torch.full((1, 1, 8, 8), 0.5))[0, :4]
    assert (means.diagonal() > grey + 0.3).all(), (means.diagonal(), grey)
    # image b drives channel b harder than the images made for the other channels do on average
    for c in range(4):
        others = torch.cat([means[:c, c], means[c + 1 :, c]])
        assert means[c, c] > 1.5 * others.mean(), (c, means)


def test_neuron_with_diversity_makes_different_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], digits: convlens.Model
) -> None:
    out = tmp_path / "neuron.png"
    assert (
        main(
            [
                "visualize",
                "neuron",
                "act2:1",
                "--diversity",
                "2",
                "--model",
                "digits_cnn",
                "--steps",
                "30",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    payload = _json(capsys, cmd_visualize.SCHEMA)
    assert (
        payload["objective"]
        == f"channel(act2:1) + {cmd_visualize.DIVERSITY_WEIGHT:g}*diversity(act2)"
    )
    assert [r["title"] for r in payload["images"]] == ["act2:1 #0", "act2:1 #1"]  # type: ignore[index, union-attr]
    image = Result.load(out.with_suffix("")).tensors["image"]
    assert image.shape == (2, 1, 8, 8)
    assert (image[0] - image[1]).abs().max() > 0.2  # two images, not one twice
    grey = _act2_means(digits, torch.full((1, 1, 8, 8), 0.5))[0, 1]
    assert (_act2_means(digits, image)[:, 1] > grey + 0.1).all()  # both still drive channel 1


def test_snapshots_write_a_gif_and_a_filmstrip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "snap.png"
    assert (
        main(
            [
                "visualize",
                "class",
                "3",
                "--model",
                "digits_cnn",
                "--steps",
                "30",
                "--snapshots",
                "10",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    payload = _json(capsys, cmd_visualize.SCHEMA)
    assert payload["gif"] == str(out.with_suffix(".gif"))
    assert (tmp_path / "snap-filmstrip.png").is_file()
    result = Result.load(out.with_suffix(""))
    assert result.tensors["snapshot_steps"].tolist() == [0, 10, 20, 30]
    with Image.open(payload["gif"]) as gif:  # type: ignore[arg-type]
        assert gif.n_frames == 4 and gif.size == (8, 8)
        frames = []
        for k in range(gif.n_frames):
            gif.seek(k)
            frames.append(np.asarray(gif.convert("L")).astype(int))
    final = (quantize_8bit(result.tensors["image"][0, 0]) * 255).round().numpy().astype(int)
    assert np.array_equal(frames[-1], final)  # the last frame is the final image
    assert not np.array_equal(frames[0], frames[-1])


def test_invert_strip_and_single_layer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = _digit(tmp_path / "one.png")
    out = tmp_path / "strip.png"
    assert (
        main(
            [
                "invert",
                str(photo),
                "--model",
                "digits_cnn",
                "--layers",
                "conv1,act2",
                "--steps",
                "20",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    payload = _json(capsys, cmd_invert.SCHEMA)
    rows = payload["layers"]
    assert [r["layer"] for r in rows] == ["conv1", "act2"]  # type: ignore[union-attr]
    assert all(np.isfinite(r["psnr"]) and 0 < r["relative_error"] < 1.5 for r in rows)  # type: ignore[union-attr]
    written = sorted(p.name for p in tmp_path.iterdir())
    assert out.is_file() and written == [
        "one.png",
        "strip-act2.json",
        "strip-act2.npz",
        "strip-conv1.json",
        "strip-conv1.npz",
        "strip.png",
    ]
    saved = Result.load(tmp_path / "strip-act2")
    assert (
        saved.provenance["params"]["layer"] == "act2" and saved.provenance["model"] == "digits_cnn"
    )

    # one layer, no prior, more steps: conv1 (1 -> 16 channels, 3x3, padded) determines the
    # photo, so the saved 8-bit reconstruction is the photo itself, and the reported top-1 is
    # what `convlens predict` says about the photo
    single = tmp_path / "single.png"
    assert (
        main(
            [
                "invert",
                str(photo),
                "--model",
                "digits_cnn",
                "--layer",
                "conv1",
                "--tv",
                "0",
                "--steps",
                "200",
                "-o",
                str(single),
                "--json",
            ]
        )
        == 0
    )
    (row,) = _json(capsys, cmd_invert.SCHEMA)["layers"]  # type: ignore[misc]
    with Image.open(tmp_path / "single-image.png") as saved, Image.open(photo) as original:
        assert np.array_equal(np.asarray(saved), np.asarray(original))
    assert row["psnr"] > 50 and row["relative_error"] < 0.01  # ~88 dB, ~1e-4
    assert main(["predict", str(photo), "--model", "digits_cnn", "--json", "--top-k", "1"]) == 0
    top = _json(capsys, cmd_predict.SCHEMA)["predictions"][0]["top"][0]  # type: ignore[index]
    assert row["top1"]["class"] == top["class"] == 1
    assert row["top1"]["probability"] == pytest.approx(top["probability"], abs=1e-6)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["visualize", "layer", "nope"], "nope"),
        (["visualize", "layer", "act2", "--diversity", "2"], "--diversity"),
        (["visualize", "neuron", "act2:1", "--batch", "3"], "--batch"),
        (["visualize", "neuron", "nope:1"], "nope"),
        (["invert", "{photo}", "--layers", "conv1,nope"], "nope"),
        (["visualize", "layer", "act2", "--channels", "a"], "--channels"),
        (["visualize", "layer", "act2", "--channels", "5-3"], "--channels"),
        (["visualize", "layer", "act2", "--channels", "30-40"], "32 channels"),
        (["visualize", "neuron", "act2:99"], "32 channels"),
        (["visualize", "neuron", "act2:1:9:9"], "8x8"),
        (["visualize", "neuron", "act3:1:0:0"], "no spatial map"),
        (["visualize", "neuron", "act2"], "layer:channel"),
        (["visualize", "class", "eleven"], "eleven"),
        (["visualize", "class", "10"], "out of range"),
        (["visualize", "class", "3", "--steps", "0"], "--steps 0"),
        (["visualize", "neuron", "act2:1", "--diversity", "-1"], "--diversity"),
        (["invert", "{photo}", "--layer", "conv1", "--steps", "0"], "--steps 0"),
        (["invert", "{photo}", "--layer", "conv1", "--tv", "-1"], "--tv"),
        (["invert", "{photo}", "--layers", ","], "--layers"),
        (["invert", "{missing}", "--layer", "conv1"], "missing.png"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    photo = _digit(tmp_path / "one.png")
    out = tmp_path / "out" / "picture.png"
    filled = [a.format(photo=photo, missing=tmp_path / "missing.png") for a in args]
    quick = (
        [] if "--steps" in args else ["--steps", "2"]
    )  # were the input wrongly accepted, finish fast
    assert main([*filled, *quick, "--model", "digits_cnn", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
