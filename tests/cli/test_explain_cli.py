"""``convlens explain``: pictures, raw maps equal to the library's, folders through the runner,
bad input refused with one line and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from PIL import Image

import convlens
from convlens.cli import cmd_explain
from convlens.cli.main import main


def _digit(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    image = np.zeros((8, 8), dtype=np.uint8)  # digits_cnn's input size (scikit-learn digits)
    image[1:7, 3:5] = rng.integers(150, 255, (6, 2), dtype=np.uint8)  # a bright stroke
    Image.fromarray(image).save(path)
    return path


def test_raw_maps_equal_the_library_and_the_picture_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = _digit(tmp_path / "a.png", 0)
    raw, out = tmp_path / "raw.npy", tmp_path / "a-sal.png"
    assert (
        main(
            [
                "explain",
                str(photo),
                "--model",
                "digits_cnn",
                "--method",
                "saliency",
                "--raw",
                str(raw),
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    payload = json.loads(capsys.readouterr().out)
    jsonschema.validate(payload, cmd_explain.SCHEMA)
    model = convlens.load_model("digits_cnn")
    expected = convlens.explain(model, str(photo), "saliency").tensors["attribution"]
    saved = torch.from_numpy(np.load(raw))
    assert saved.shape == (1, 1, 8, 8)
    torch.testing.assert_close(saved, expected.float())
    assert out.stat().st_size > 1000 and payload["images"][0]["results"][0]["method"] == "saliency"


def test_a_list_of_methods_makes_one_grid_per_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = [_digit(tmp_path / f"{i}.png", i) for i in range(2)]
    out = tmp_path / "grids"
    code = main(
        [
            "explain",
            *map(str, photos),
            "--model",
            "digits_cnn",
            "--method",
            "saliency,gradcam,occlusion",
            "--opt",
            "patch=3",
            "--opt",
            "stride=2",
            "-o",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert [[r["method"] for r in row["results"]] for row in payload["images"]] == [
        ["saliency", "gradcam", "occlusion"]
    ] * 2
    assert len([p for p in out.iterdir() if p.suffix == ".png"]) == 2


def test_a_folder_goes_through_the_runner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "digits" / "3"
    folder.mkdir(parents=True)
    for i in range(3):
        _digit(folder / f"{i}.png", i)
    out = tmp_path / "maps"
    assert (
        main(
            [
                "explain",
                str(tmp_path / "digits"),
                "--model",
                "digits_cnn",
                "--method",
                "saliency",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)["dataset"]
    assert summary["items"] == 3 and summary["done"] == 3 and summary["failed"] == 0
    from convlens.data.runner import read_outputs

    outputs = read_outputs(out)
    assert outputs["map"].shape == (3, 8, 8) and outputs["target"].tolist() == [
        3,
        3,
        3,
    ]  # the folder's label


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--method", "nope"], "unknown method"),
        (["--opt", "n_steps"], "KEY=VALUE"),
        (["--target", "zebra-ish"], "zebra-ish"),
        (["--layer", "no.such.layer"], "no.such.layer"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    photo = _digit(tmp_path / "a.png", 0)
    out = tmp_path / "out.png"
    assert main(["explain", str(photo), "--model", "digits_cnn", "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        # a misspelt key names the method's real options
        (
            ["--method", "integrated_gradients", "--opt", "n_stepz=8"],
            "--opt n_stepz: integrated_gradients does not take it; valid: baseline, blur_sigma, chunk, n_scan, n_steps, quadrature, uniform_share",
        ),
        # a local variable of the method's code is not an option (it used to pass the co_varnames filter)
        (
            ["--method", "integrated_gradients", "--opt", "options=1"],
            "--opt options: integrated_gradients does not take it",
        ),
        # what the command sets itself is not an option either
        (["--method", "integrated_gradients", "--opt", "generator=1"], "--opt generator:"),
        (
            ["--method", "saliency", "--opt", "n_steps=8"],
            "--opt n_steps: saliency does not take it; it takes no options",
        ),
        (
            ["--method", "saliency,gradcam", "--opt", "n_steps=8"],
            "none of the methods saliency, gradcam takes it; valid: create_graph, reshape",
        ),
        (
            ["--method", "smoothgrad", "--opt", "n_steps=8"],
            "valid: base_method, chunk, n_samples, sigma",
        ),
    ],
)
def test_unknown_opt_keys_are_refused_with_the_valid_ones_before_any_work(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    needle: str,
) -> None:
    photo = _digit(tmp_path / "a.png", 0)
    out = tmp_path / "out.png"

    def no_model(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr("convlens.cli.context.Context.models", no_model)
    assert main(["explain", str(photo), "--model", "digits_cnn", "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_opt_keys_reach_the_methods_that_take_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # n_steps goes to integrated_gradients (its provenance records it); smoothgrad takes its
    # base method's options too: with base_method=integrated_gradients, n_steps reaches IG
    photo = _digit(tmp_path / "a.png", 0)
    raw = tmp_path / "raw.npy"
    args = ["explain", str(photo), "--model", "digits_cnn", "--json", "-o", str(tmp_path / "o.png")]
    assert (
        main([*args, "--method", "integrated_gradients", "--opt", "n_steps=7", "--raw", str(raw)])
        == 0
    )
    capsys.readouterr()
    model = convlens.load_model("digits_cnn")
    expected = convlens.explain(model, str(photo), "integrated_gradients", n_steps=7).tensors[
        "attribution"
    ]
    default = convlens.explain(model, str(photo), "integrated_gradients").tensors["attribution"]
    torch.testing.assert_close(torch.from_numpy(np.load(raw)), expected.float())
    assert not torch.allclose(expected, default)  # n_steps changed the result, so it was passed
    opts = [
        "--opt",
        "base_method=integrated_gradients",
        "--opt",
        "n_steps=3",
        "--opt",
        "n_samples=2",
    ]
    assert main([*args, "--method", "smoothgrad", *opts, "--raw", str(raw)]) == 0
    capsys.readouterr()
    expected = convlens.explain(
        model, str(photo), "smoothgrad", base_method="integrated_gradients", n_steps=3, n_samples=2
    ).tensors["attribution"]
    torch.testing.assert_close(torch.from_numpy(np.load(raw)), expected.float())
